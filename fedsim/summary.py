"""A run's numbers: the per-round row over every silo and the summary of the whole run
(``summary.json``)."""

from __future__ import annotations

from typing import Any

from fedsim.data import silo_names
from fedsim.faults import failed_entries

#: Θ's test accuracy split by whether a sample's (domain, class) cell is in some silo's training data
UNION_KEYS = ("foundation_accuracy_in_union", "foundation_accuracy_out_of_union")


def round_row(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One round over every silo's records: mean accuracy and loss, bytes, the slowest silo's
    times, mean gradient steps, Θ's scores."""
    accs = [r["accuracy"] for r in records if r.get("accuracy") is not None]
    vals = [r["val_accuracy"] for r in records if r.get("val_accuracy") is not None]
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    return {
        "round": records[0]["round"],
        "loss": sum(losses) / len(losses) if losses else None,
        "accuracy": sum(accs) / len(accs) if accs else None,
        "val_accuracy": sum(vals) / len(vals) if vals else None,
        "bytes": sum(r["bytes_sent"] + r.get("bytes_from_server", 0) for r in records),
        "grad_steps": sum(r.get("grad_steps", 0) for r in records) / len(records),
        "round_time_s": max(r["round_time_s"] for r in records),
        "sim_time_ms": max(r["sim_time_ms"] for r in records),
        "foundation_accuracy": records[0].get("foundation_accuracy"),
        "foundation_val_accuracy": records[0].get("foundation_val_accuracy"),
        # Θ on the test cells some silo trains on / on those no silo holds (synthetic data)
        **{key: records[0][key] for key in UNION_KEYS if key in records[0]},
        # faults: who took part, who did not and why (records of older runs: everyone took part)
        "participants": sorted(r["silo"] for r in records if r.get("participated", True)),
        "absent": {r["silo"]: r["absent"] for r in sorted(records, key=lambda r: r["silo"]) if r.get("absent")},
        "corrupted": {r["silo"]: r["corrupted"] for r in sorted(records, key=lambda r: r["silo"]) if r.get("corrupted")},
        "silos": {r["silo"]: r for r in records},
    }


def build_summary(plan, history: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """``summary.json``: the run's identity, the final Θ (``final``: foundation_accuracy,
    foundation_loss and, with a validation split, foundation_val_accuracy), the last round per
    silo (with a validation split also each silo's score on its own part and their mean,
    mean_silo_val_accuracy), traffic, cost and every per-round series. The trainer adds the wall
    time over every attempt (:class:`fedsim.checkpoint.AttemptLog`)."""
    cfg = plan.cfg
    last = history[-1] if history else {"silos": {}}
    taken = {i: sum(i in r.get("participants", r["silos"]) for r in history) for i in last["silos"]}
    reasons: dict[int, dict[str, int]] = {}
    for r in history:
        for i, why in r.get("absent", {}).items():
            reasons.setdefault(int(i), {}).setdefault(why, 0)
            reasons[int(i)][why] += 1
    corrupted: dict[int, dict[str, int]] = {}
    for r in history:
        for i, kind in r.get("corrupted", {}).items():
            corrupted.setdefault(int(i), {}).setdefault(kind, 0)
            corrupted[int(i)][kind] += 1
    silos = []
    names = silo_display_names(plan)
    for i, rec in sorted(last["silos"].items()):
        silos.append({"silo": i, "name": names[i], "model": cfg.model.for_silo(i).name,
                      "accuracy": rec.get("accuracy"), **({"val_accuracy": rec["val_accuracy"]}
                                                          if "val_accuracy" in rec else {}),
                      "loss": rec.get("loss"), "test_loss": rec.get("test_loss"),
                      "bytes_sent_last_round": rec["bytes_sent"],
                      "rounds_taken_part": taken.get(i, 0), "absent_last_round": rec.get("absent")})
        if "epsilon" in rec:
            silos[-1]["epsilon"] = rec["epsilon"]
    total_bytes = sum(r["bytes"] for r in history)
    summary = {
        **describe(plan),
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "foundation_accuracy": final.get("foundation_accuracy"),
        "foundation_loss": final.get("foundation_loss"),
        # the same predictions split (fedsim.evaluation.union_split); None without Θ, for data
        # without that split, or for an empty side; weighted by the counts they give Θ's accuracy
        **{key: final.get(key) for key in (*UNION_KEYS, "test_samples_in_union", "test_samples_out_of_union")},
        "mean_silo_accuracy": last.get("accuracy"),
        "total_bytes": total_bytes,
        "bytes_per_round": total_bytes / max(len(history), 1),
        # gradient steps a silo's compute runs per round (own training, hosted visitors,
        # distillation), averaged over silos and rounds: the cost of a round
        "grad_steps_per_round": sum(r.get("grad_steps", 0) for r in history) / max(len(history), 1),
        "round_time_s": [r["round_time_s"] for r in history],
        "sim_time_ms": [r["sim_time_ms"] for r in history],
        "accuracy_by_round": [r["accuracy"] for r in history],
        "foundation_accuracy_by_round": [r["foundation_accuracy"] for r in history],
        "silos": silos,
        "task": cfg.task,
        # what the *accuracy* fields hold: test accuracy, or mean foreground Dice (segmentation)
        "metric": "dice" if cfg.task == "segmentation" else "accuracy",
        "init": "file" if cfg.init_from else cfg.init,
        # faults: rounds each silo took part in, the rounds it sat out by reason, the silos of each
        # round, the silos lost for good (crashed and excluded, or dropped to the end), corruptions
        "participation": {
            "rounds_taken_part": {str(i): n for i, n in sorted(taken.items())},
            "absent_rounds": {str(i): why for i, why in sorted(reasons.items())},
            "participants_by_round": [r.get("participants") for r in history],
            "failed_silos": lost_silos(plan),
            # faults.corrupt: the entries, and the rounds each silo was corrupted in, by kind
            "corruption": [dict(silo=c.silo, kind=c.kind, level=c.level, start=c.start, end=c.end)
                           for c in cfg.faults.corrupt],
            "corrupted_rounds": {str(i): kinds for i, kinds in sorted(corrupted.items())},
        },
    }
    if getattr(plan, "privacy", None) is not None:
        # ε spent on each silo's data by the end (Opacus RDP accountant at privacy.delta); the
        # run's guarantee is the largest
        summary["epsilon"] = max((s["epsilon"] for s in silos if "epsilon" in s), default=None)
        summary["epsilon_by_round"] = [max(r.get("epsilon", 0.0) for r in h["silos"].values()) for h in history]
        summary["privacy"] = plan.privacy.describe()
    if cfg.compression.active:
        summary["compression"] = {"kind": cfg.compression.kind, "error_feedback": cfg.compression.error_feedback,
                                  "ratio": cfg.compression.ratio if cfg.compression.kind == "topk" else None}
    for key in UNION_KEYS:
        if any(r.get(key) is not None for r in history):
            summary[f"{key}_by_round"] = [r.get(key) for r in history]
    if "foundation_val_accuracy" in final:
        summary["foundation_val_accuracy"] = final["foundation_val_accuracy"]
        summary["foundation_val_loss"] = final.get("foundation_val_loss")  # finer than a small split's accuracy
        summary["foundation_val_accuracy_by_round"] = [r.get("foundation_val_accuracy") for r in history]
    if any(r.get("val_accuracy") is not None for r in history):  # each silo on its own validation split
        summary["mean_silo_val_accuracy"] = last.get("val_accuracy")
        summary["val_accuracy_by_round"] = [r.get("val_accuracy") for r in history]
    if cfg.task == "segmentation":  # the same numbers under their own names
        summary.update(foundation_dice=summary["foundation_accuracy"], mean_silo_dice=summary["mean_silo_accuracy"],
                       dice_by_round=summary["accuracy_by_round"],
                       foundation_dice_by_round=summary["foundation_accuracy_by_round"])
    return summary


def silo_display_names(plan) -> list[str]:
    """How tables name each silo of the training graph: the topology's name, or the name the data
    give it (a silo folder) when the topology only numbers its silos — both when both say
    something."""
    names = [s.name for s in plan.topology.silos]
    data_names = None if plan.scenario.pooled else silo_names(plan.cfg.data)
    if data_names is None or len(data_names) != len(names):
        return names
    return [d if t == str(i) else f"{t} ({d})" for i, (t, d) in enumerate(zip(names, data_names))]


def lost_silos(plan) -> list[dict[str, Any]]:
    """Silos a run lost for good and the round each was lost in: crashed and excluded
    (``faults.on_crash: exclude``; with the rank and how often it crashed) or dropped to the end
    of the run (a ``faults.dropout`` window without an end)."""
    out = {int(e["silo"]): dict(e) for e in failed_entries(plan.run_dir)}
    for d in plan.cfg.faults.dropout:
        if d.end is None and d.silo not in out:
            out[d.silo] = {"silo": d.silo, "round": d.start, "reason": "dropout"}
    return [out[i] for i in sorted(out)]


def describe(plan) -> dict[str, Any]:
    """The identity of a run (a :class:`fedsim.plan.RunPlan`) in its summary."""
    return {"name": plan.cfg.name, "algorithm": plan.cfg.algorithm, "scenario": plan.scenario.name,
            "topology": plan.topology.name, "num_silos": plan.topology.num_silos, "world_size": plan.world_size}
