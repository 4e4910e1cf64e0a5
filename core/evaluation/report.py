"""Writing ``alignkit eval`` results: ``eval.json``, ``eval.md``, ``eval.png`` and the stdout summary."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

__all__ = ["summary_rows", "format_summary", "md_escape", "write_json", "write_markdown", "write_plot"]

#: what each accuracy measures, for tables
ACCURACY_LABELS = {
    "implicit_reward": "accuracy: implicit reward (policy - reference, summed log-prob)",
    "policy_mean_logprob": "accuracy: policy mean log-prob",
    "policy_sum_logprob": "accuracy: policy summed log-prob",
    "reference_mean_logprob": "accuracy: reference mean log-prob",
    "reference_sum_logprob": "accuracy: reference summed log-prob",
    "reward": "accuracy: reward",
}


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _ci(c) -> str:
    return f"[{c[0]:.3f}, {c[1]:.3f}]" if c else ""


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """``(metric, value, 95% interval, n)`` rows of every headline number."""
    rows = []
    pref = results.get("preference") or {}
    for name, r in (pref.get("accuracies") or {}).items():
        rows.append((ACCURACY_LABELS.get(name, f"accuracy: {name}"), _fmt(r["value"]), _ci(r["ci"]), str(r["n"])))
    gen = results.get("generation")
    if gen:
        n = str(gen["n"])
        if gen.get("reward_win_rate"):
            w = gen["reward_win_rate"]
            rows.append(("reward win rate: policy vs reference", _fmt(w["value"]), _ci(w["ci"]), str(w["n"])))
        for who in ("policy", "reference"):
            stats = gen.get(who)
            if not stats:
                continue
            if "mean_reward" in stats:
                rows.append((f"{who}: mean reward", _fmt(stats["mean_reward"]), "", n))
            rows.append((f"{who}: mean response length (tokens)", _fmt(stats["length_tokens"], 2), "", n))
            rows.append((f"{who}: EOS rate", _fmt(stats["eos_rate"], 3), "", n))
        if gen.get("kl"):
            rows.append(("sequence KL(policy || reference), k1", _fmt(gen["kl"]["value"]), "", n))
        for k, v in (gen.get("metrics") or {}).items():
            rows.append((k, _fmt(v), "", n))
    judge = results.get("judge")
    if judge:
        rows.append(("judge win rate: policy vs reference", _fmt(judge["win_rate"]), _ci(judge["win_rate_ci"]),
                     str(judge["n"])))
        rows.append(("judge order agreement", _fmt(judge["agreement"]), "", str(judge["n"])))
    for task, metrics in (results.get("lm_eval") or {}).items():
        n = metrics.get("n")
        for k, v in metrics.items():
            if k != "n":
                rows.append((f"lm-eval {task}: {k}", _fmt(v), "", "-" if n is None else str(int(n))))
    return rows


def format_summary(results: dict) -> str:
    """The short plain-text table printed to stdout."""
    rows = [("metric", "value", "95% CI", "n")] + summary_rows(results)
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = f"alignkit eval: {results['target']['model']}"
    ref = results.get("reference")
    head += f"\nreference: {_describe_reference(ref)}"
    notes = [f"note: {n}" for n in results.get("notes") or []]
    return "\n".join([head, *notes, "", *lines])


def _describe_reference(ref: dict | None) -> str:
    if ref is None:
        return "none"
    if ref["kind"] == "path":
        return ref["path"]
    return f"the run's starting model (rebuilt from its model config, seed {ref['seed']})"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md_escape(text) -> str:
    """Text safe inside one Markdown table cell: Markdown punctuation backslash-escaped (``|`` included,
    so cells never split), newlines as ``<br>``. ``None`` becomes ``-``."""
    if text is None:
        return "-"
    text = _MD_SPECIAL.sub(r"\\\1", str(text))
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def write_json(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")


def write_markdown(results: dict, path: Path) -> None:
    """A summary table, notes, and the first ``eval.samples_shown`` generations side by side."""
    t = results["target"]
    lines = ["# alignkit eval", "", f"- model: `{t['model']}` ({t['model_kind']}"
             + (f", algo={t['algo']}" if t.get("algo") else "") + ")",
             f"- reference: {md_escape(_describe_reference(results.get('reference')))}"]
    if results.get("reward"):
        lines.append(f"- reward: {md_escape(results['reward']['source'])}")
    pref = results.get("preference") or {}
    lines.append(f"- held-out pairs: {pref.get('n')} scored ({pref.get('held_out')} held out)")
    lines.append(f"- intervals: {results['interval']}")
    for n in results.get("notes") or []:
        lines.append(f"- note: {md_escape(n)}")
    lines += ["", "## Summary", "", "| metric | value | 95% CI | n |", "|---|---|---|---|"]
    lines += [f"| {md_escape(m)} | {v} | {c} | {n} |" for m, v, c, n in summary_rows(results)]
    gen = results.get("generation")
    if gen and gen.get("samples"):
        shown = int(results["config"]["eval"]["samples_shown"])
        s = gen["settings"]
        settings = (f"{min(shown, len(gen['samples']))} of {gen['n']} held-out prompts; "
                    f"max_new_tokens={s['max_new_tokens']}, temperature={s['temperature']}, top_k={s['top_k']}, "
                    f"top_p={s['top_p']}, seed={gen['seed']}.")
        lines += ["", "## Sample generations", "", settings, ""]
        with_reward = gen["samples"][0].get("policy_reward") is not None
        head = "| # | prompt | policy | reference |" + (" reward (policy / reference) |" if with_reward else "")
        lines += [head, "|---" * (5 if with_reward else 4) + "|"]
        for i, smp in enumerate(gen["samples"][:shown]):
            row = f"| {i} | {md_escape(smp['prompt'])} | {md_escape(smp['policy'])} | {md_escape(smp['reference'])} |"
            if with_reward:
                row += f" {_fmt(smp['policy_reward'], 3)} / {_fmt(smp['reference_reward'], 3)} |"
            lines.append(row)
    path.write_text("\n".join(lines) + "\n")


def write_plot(results: dict, path: Path) -> None:
    """Accuracies and win rates with their interval as error bars; generation metrics of policy and
    reference side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    props = [(ACCURACY_LABELS.get(k, k).replace("accuracy: ", ""), r["value"], r["ci"])
             for k, r in ((results.get("preference") or {}).get("accuracies") or {}).items()]
    gen = results.get("generation") or {}
    if gen.get("reward_win_rate"):
        w = gen["reward_win_rate"]
        props.append(("reward win rate vs reference", w["value"], w["ci"]))
    if results.get("judge"):
        j = results["judge"]
        props.append(("judge win rate vs reference", j["win_rate"], j["win_rate_ci"]))
    fig, axes = plt.subplots(1, 2 if gen else 1, figsize=(13 if gen else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    ys = list(range(len(props)))
    vals = [p[1] for p in props]
    err = [[p[1] - p[2][0] for p in props], [p[2][1] - p[1] for p in props]]
    ax.barh(ys, vals, xerr=err, capsize=4, color="#4c72b0")
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(ys, [p[0] for p in props], fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title(f"held-out pairs (n={(results.get('preference') or {}).get('n')}), 95% Wilson intervals", fontsize=9)
    if gen:
        ax = axes[0][1]
        names = ["eos_rate"] + sorted(k for k in gen.get("metrics", {}) if k.startswith("distinct/policy_"))
        labels = [n.replace("distinct/policy_", "") for n in names]
        pol = [gen["policy"]["eos_rate"]] + [gen["metrics"][n] for n in names[1:]]
        x = list(range(len(names)))
        width = 0.38
        ax.bar([i - width / 2 for i in x], pol, width, label="policy", color="#4c72b0")
        if gen.get("reference"):
            ref = [gen["reference"]["eos_rate"]] + [gen["metrics"].get(n.replace("policy_", "reference_"), 0.0)
                                                     for n in names[1:]]
            ax.bar([i + width / 2 for i in x], ref, width, label="reference", color="#dd8452")
        ax.set_xticks(x, labels)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        title = (f"generations (n={gen['n']}): length {gen['policy']['length_tokens']:.1f}"
                 + (f" vs {gen['reference']['length_tokens']:.1f}" if gen.get("reference") else "") + " tokens")
        if gen.get("kl"):
            title += f", KL {gen['kl']['value']:.2f} nats"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
