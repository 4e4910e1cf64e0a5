from alignkit.cli import main

raise SystemExit(main())
