"""The data browser's work: data configs by name or path, their examples through alignkit's own loader
(:func:`alignkit.data.load.load_source`), per-source statistics, and prompt templates saved as data
configs that ``alignkit train`` loads unchanged."""
from __future__ import annotations

import json
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from alignkit.errors import UserError

_COMPOSE_LOCK = threading.Lock()  # Hydra's global state: one composition at a time
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
KINDS = ("sft", "preference", "prompt")
#: the slots of each target kind a template fills
SLOTS = {"sft": ("prompt", "completion"), "preference": ("prompt", "chosen", "rejected"), "prompt": ("prompt",)}
_BARE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def conf_root(home: Path) -> Path:
    """The studio's config folder: saved data configs go to ``<home>/conf/data/<name>.yaml``."""
    return home / "conf"


def searchpath_override(home: Path) -> str:
    """The override that lets ``alignkit train`` find the studio's saved data configs (``data=<name>``)."""
    (conf_root(home) / "data").mkdir(parents=True, exist_ok=True)
    return f"hydra.searchpath=[file://{conf_root(home).resolve()}]"


def data_names(home: Path, extra: list[str]) -> list[str]:
    """Data presets, the studio's saved data configs and those given on the command line."""
    from alignkit.config.compose import yaml_options

    saved = sorted(p.stem for p in (conf_root(home) / "data").glob("*.yaml"))
    return list(dict.fromkeys([*extra, *yaml_options("data"), *saved]))


def compose_run_config(home: Path, data: str, model_overrides: list[str]):
    """The run config ``alignkit train data=<data>`` would use (``data`` a preset, a saved config or a YAML path)."""
    from alignkit.config.compose import compose_config
    from alignkit.config.schema import DataConfig

    is_file = data.endswith((".yaml", ".yml"))
    with _COMPOSE_LOCK:
        overrides = [searchpath_override(home), *model_overrides]
        cfg = compose_config(overrides + ([] if is_file else [f"data={data}"]))
    if is_file:
        path = Path(data).expanduser()
        if not path.is_file():
            raise UserError(f"data config not found: {data}", "give a data preset name or a data config YAML file")
        cfg.data = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(path))
    return cfg


def formats() -> dict:
    from alignkit.registry import default_registry

    return {name: spec for name, (spec, _) in default_registry().data_formats.items()}


def source_kind(src, fmts: dict) -> tuple[str, str]:
    """(format name, kind) of a source, detecting ``format: auto`` from its first record."""
    from alignkit.data.formats import detect_format
    from alignkit.data.load import read_rows

    if src.format != "auto":
        spec = fmts.get(src.format)
        if spec is None:
            raise UserError(f"unknown format {src.format!r}", f"choose one of {', '.join(sorted(fmts))}")
        return spec.name, spec.kind
    rows = read_rows(src.path, src.split)
    spec = detect_format(list(rows[0].keys()), dict(src.fields or {}), fmts)
    return spec.name, spec.kind


def as_text(value) -> str:
    from alignkit.datagen.io import as_text as _as_text

    return _as_text(value)


def responses_of(example: dict, kind: str) -> list[tuple[str, str]]:
    """``(label, text)`` of each response of a normalised example."""
    if kind == "sft":
        return [("completion", example["completion"])]
    if kind == "preference":
        if "chosen" in example:
            return [("chosen", example["chosen"]), ("rejected", example["rejected"])]
        return [("completion" + (" (desirable)" if example.get("label") else " (undesirable)"), example["completion"])]
    if kind == "ranked":
        return [(f"score {s:g}", r) for r, s in zip(example["responses"], example["scores"])]
    if kind == "prompt":
        return [("reference", example["reference"])] if example.get("reference") else []
    return []


SCRIPTS = ("LATIN", "CYRILLIC", "GREEK", "ARABIC", "HEBREW", "DEVANAGARI", "HANGUL", "HIRAGANA", "KATAKANA", "CJK",
           "THAI")


def script_of(text: str) -> str:
    """The writing system most letters of ``text`` belong to (Unicode character names), ``none`` without letters."""
    counts: Counter = Counter()
    for ch in text[:2000]:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            counts[next((s for s in SCRIPTS if name.startswith(s)), "other")] += 1
    return counts.most_common(1)[0][0].lower() if counts else "none"


@dataclass
class SourceView:
    """One source's examples (normalised, in the loader's shuffled order; train part then held-out part)."""
    index: int
    path: str
    format: str
    kind: str
    examples: list[dict]
    n_train: int
    n_eval: int
    stats: dict = field(default_factory=dict)


@dataclass
class DataView:
    name: str
    cfg: object  #: the run config (``cfg.data`` is the data config)
    sources: list[SourceView]
    mixture: dict = field(default_factory=dict)


def load_view(cfg, name: str) -> DataView:
    """Every source of ``cfg.data`` through :func:`alignkit.data.load.load_source`, in its own kind."""
    from alignkit.data.load import load_source

    fmts = formats()
    out = []
    for j, src in enumerate(cfg.data.sources):
        fmt, kind = source_kind(src, fmts)
        train, held = load_source(src, fmts, kind, cfg.data.shuffle_seed + j, index=j)
        out.append(SourceView(j, str(src.path), fmt, kind, train + held, len(train), len(held)))
    return DataView(name, cfg, out)


def token_lengths(examples: list[dict], kind: str, tokenizer) -> list[int]:
    """Prompt + longest response tokens of each example, as the trainer tokenises them (before truncation)."""
    from alignkit.data.tokenize import encode_response, render_prompt

    out = []
    for ex in examples:
        p = len(tokenizer(render_prompt(ex["prompt"], tokenizer), add_special_tokens=False)["input_ids"])
        resp = [t for _, t in responses_of(ex, kind) if isinstance(t, str)]
        out.append(p + max((len(encode_response(ex["prompt"], r, tokenizer)) for r in resp), default=0))
    return out


def histogram(values: list[int], bins: int = 12) -> list[dict]:
    """Equal-width bins ``{"lo", "hi", "count", "height"}`` (``height``: % of the tallest bin)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((v - lo) // width for v in values)
    top = max(counts.values())
    return [{"lo": lo + b * width, "hi": lo + (b + 1) * width - 1, "count": counts.get(b, 0),
             "height": round(100 * counts.get(b, 0) / top)} for b in range(-(-(hi - lo + 1) // width))]


def _key(ex: dict) -> str:
    return json.dumps(ex, sort_keys=True, ensure_ascii=False, default=str)


def source_stats(view: SourceView, tokenizer, data_cfg) -> dict:
    """Counts, token-length histogram, truncation at ``max_length``, duplicates and scripts of one source."""
    lengths = token_lengths(view.examples, view.kind, tokenizer)
    prompts = Counter(as_text(ex["prompt"]) for ex in view.examples)
    whole = Counter(_key(ex) for ex in view.examples)
    scripts = Counter(script_of(as_text(ex["prompt"])) for ex in view.examples)
    over = sum(n > data_cfg.max_length for n in lengths)
    return {
        "examples": len(view.examples), "train": view.n_train, "held_out": view.n_eval,
        "lengths": {"min": min(lengths, default=0), "max": max(lengths, default=0),
                    "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0},
        "histogram": histogram(lengths),
        "over_max_length": over, "max_length": int(data_cfg.max_length),
        "duplicate_prompts": sum(c - 1 for c in prompts.values()),
        "duplicate_examples": sum(c - 1 for c in whole.values()),
        "scripts": dict(scripts.most_common()),
    }


def mixture_stats(view: DataView) -> dict:
    """The whole mixture: each source's weight, share of the training mixture and training examples (as
    :func:`alignkit.data.load.mix` draws them), totals, and prompts that occur in more than one source."""
    weights = [float(s.weight) for s in view.cfg.data.sources]
    train_total = sum(s.n_train for s in view.sources)
    rows = [{"path": s.path, "weight": w, "share": w / sum(weights),
             "mixed": train_total if len(view.sources) == 1 else int(round(train_total * w / sum(weights)))}
            for s, w in zip(view.sources, weights)]
    seen: dict[str, set] = {}
    for s in view.sources:
        for ex in s.examples:
            seen.setdefault(as_text(ex["prompt"]), set()).add(s.index)
    return {"sources": rows, "examples": sum(len(s.examples) for s in view.sources), "train": train_total,
            "held_out": sum(s.n_eval for s in view.sources),
            "over_max_length": sum(s.stats.get("over_max_length", 0) for s in view.sources),
            "histogram": histogram([n for s in view.sources for n in s.stats.get("_lengths", [])]),
            "shared_prompts": sum(len(v) > 1 for v in seen.values())}


def matches(ex: dict, kind: str, query: str) -> bool:
    q = query.lower()
    return q in as_text(ex["prompt"]).lower() or any(q in str(t).lower() for _, t in responses_of(ex, kind))


# -- templates ------------------------------------------------------------------------------------

def _jinja():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def render_template(slots: dict[str, str], row: dict) -> dict:
    """Each slot's Jinja2 template (sandboxed, undefined fields are errors) rendered over one raw record."""
    from jinja2 import TemplateError

    env, out = _jinja(), {}
    for slot, text in slots.items():
        try:
            out[slot] = env.from_string(text).render(**row)
        except TemplateError as exc:
            raise UserError(f"template of {slot!r}: {exc}", "fix the template (fields: "
                            f"{', '.join(sorted(row))})") from None
    return out


def bare_fields(slots: dict[str, str]) -> dict[str, str] | None:
    """``{slot: column}`` when every slot is just ``{{ column }}`` (a field mapping suffices), else None."""
    found = {slot: _BARE.match(text.strip()) for slot, text in slots.items()}
    return {slot: m.group(1) for slot, m in found.items()} if all(found.values()) else None


def save_template(home: Path, name: str, kind: str, slots: dict[str, str], src_path: str, split: str = "train",
                  max_length: int = 512, eval_size: float = 0.1) -> tuple[Path, str]:
    """Save a template as ``<home>/conf/data/<name>.yaml`` and return it with the ``alignkit train`` command.

    A template whose slots are plain fields becomes a field mapping over the original file; any other
    is rendered over every record into ``<name>.jsonl`` next to the YAML (the ``kind``'s own format),
    with the template text and the source's sha256 in ``<name>.provenance.json``."""
    from alignkit.data.load import content_hash, read_rows, resolve_path

    if not _NAME.match(name or ""):
        raise UserError(f"data config name {name!r} is not allowed", "use 1-64 letters, digits, '_' or '-'")
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}", f"choose one of {', '.join(KINDS)}")
    missing = [s for s in SLOTS[kind] if not slots.get(s, "").strip()]
    if missing:
        raise UserError(f"the template leaves {', '.join(missing)} empty", "write a template for each of them")
    slots = {s: slots[s] for s in SLOTS[kind]}
    folder = conf_root(home) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    yaml_path = folder / f"{name}.yaml"
    mapping = bare_fields(slots)
    rows = read_rows(src_path, split)
    source = {"format": kind, "eval_size": eval_size}
    if mapping is not None:
        source["path"] = str(Path(resolve_path(src_path)).resolve()) if Path(resolve_path(src_path)).exists() \
            else src_path
        source["fields"] = {slot: col for slot, col in mapping.items() if slot != col}
    else:
        out = folder / f"{name}.jsonl"
        tmp = out.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                try:
                    f.write(json.dumps(render_template(slots, row), ensure_ascii=False) + "\n")
                except UserError as exc:
                    tmp.unlink(missing_ok=True)
                    raise UserError(f"{src_path}, record {i + 1}: {exc.what}", exc.fix) from None
        tmp.replace(out)
        source["path"] = str(out.resolve())
        local = Path(resolve_path(src_path))
        prov = {"template": slots, "kind": kind, "source": src_path, "split": split,
                "source_sha256": content_hash(local) if local.is_file() else None, "rows": len(rows)}
        (folder / f"{name}.provenance.json").write_text(json.dumps(prov, indent=2, ensure_ascii=False))
    config = {"name": name, "sources": [source], "max_length": int(max_length),
              "max_prompt_length": max(1, int(max_length) // 2)}
    header = "# data config saved by alignkit studio; template:\n" + "".join(
        f"#   {slot}: {json.dumps(text, ensure_ascii=False)}\n" for slot, text in slots.items())
    yaml_path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(config)), encoding="utf-8")
    return yaml_path, train_command(home, name)


def train_command(home: Path, name: str) -> str:
    return f"alignkit train '{searchpath_override(home)}' data={name}"

