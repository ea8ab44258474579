"""What a lab compares and keeps, checked and read for its page. Pure: no Django.

A lab trains several methods from one start on one prompt pool and evaluates each on the
same held-out sets. Its --json result has run_loop's shape (loop_results.py), with one role
per method, plus each method's costs and, when some failed, why:

    {"wall_s", "headline", "checkpoints": {"start", METHOD...}, "deltas": {METHOD...},
     "costs": {METHOD: {"judge_calls", "judge_cost_usd", "train_s", "generated_tokens"}},
     "reward_model": {"heldout_accuracy": a},   # only when reward_model ran
     "failed": {METHOD: "error"}}   # only when a method failed

A method's costs are what it would cost run alone: where methods share a stage (the
start's K samples and their ratings serve dpo, kto, mpo and mdpo), each of them carries it.
The online methods' generated tokens include what they sampled while training.

`reward_model` trains no policy: it has costs but no role (no checkpoint to evaluate, no
delta); its result is its pairwise accuracy on the pairs set's held-out split, i.e. how
often it agrees with the oracle's ranking of the start's answers to held-out prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.core import loop_results


@dataclass(frozen=True)
class Method:
    label: str
    data: str  # how its training set is made
    objective: str
    source: str  # the seed or paper it comes from
    policy: bool = True  # False: trains no policy (the reward model): no role, no delta


METHODS: dict[str, Method] = {
    "dpo": Method(
        "DPO",
        "the start's K samples, rated by the judge: best vs a random one 2+ lower",
        "DPO (sigmoid) + the chosen answer's NLL (RPO)",
        "seed 001",
    ),
    "bdhs": Method(
        "BDHS",
        "chosen: the reference; rejected: the start's own answer with the image attention "
        "masked, guided by the reference sentence by sentence (no judge)",
        "DPO + NLL, as dpo",
        "seed 002, section 3.4",
    ),
    "corrupted": Method(
        "corrupted",
        "chosen: the reference; rejected: it with one fact swapped (the free oracle "
        "corruption; a judge's rewrite with --rewrite-judge on curate)",
        "DPO + NLL, as dpo",
        "POVID, seed 002 section 3.3",
    ),
    "kto": Method(
        "KTO",
        "the start's K samples, rated: desirable / undesirable by attribute thresholds",
        "KTO (TRL's KTOTrainer)",
        "Ethayarajh et al. 2024",
    ),
    "mpo": Method(
        "MPO",
        "the dpo pairs",
        "DPO 0.8 + BCO 0.2 + SFT 1.0 (TRL's loss mix)",
        "InternVL's MPO",
    ),
    "mdpo": Method(
        "mDPO",
        "the dpo pairs, and the chosen answer under a cropped image",
        "DPO + conditional preference on the image + anchor",
        "Wang et al. 2024",
    ),
    "grpo": Method(
        "GRPO",
        "the pool's prompts with their reference answers; the policy samples K per prompt "
        "while it trains, each rewarded 1 if right (+0.1 if readable), no judge",
        "GRPO (TRL's GRPOTrainer, DAPO loss), online",
        "DeepSeekMath; seed 002's online methods",
    ),
    "reward_model": Method(
        "reward model",
        "the dpo pairs (the held-out split measures it)",
        "Bradley-Terry on a scalar head (the answer's scaled log-likelihood), no policy",
        "seed 002, section 5.5",
        policy=False,
    ),
    "online_dpo": Method(
        "online DPO",
        "the dpo pairs' prompts, asked anew: the policy samples K per prompt at every step, "
        "best vs worst by the verifiable reward (the reference answer, the oracle's)",
        "DPO + NLL, as dpo, on fresh pairs",
        "seed 002, section 2.3",
    ),
    "mixed_dpo": Method(
        "mixed DPO",
        "each row: the stored dpo pair with probability lambda = 0.5, else online DPO's "
        "fresh best vs worst",
        "DPO + NLL, as dpo, offline and online pairs mixed",
        "seed 002, Equation 4",
    ),
}
POLICY_METHODS = tuple(name for name, m in METHODS.items() if m.policy)
ROLES = ("start", *POLICY_METHODS)
LABELS = {"start": "start", **{name: m.label for name, m in METHODS.items()}}
COST_KEYS = ("judge_calls", "judge_cost_usd", "train_s", "generated_tokens")
EXTRA_KEYS = ("costs", "failed", "reward_model")


def parse_methods(text: str) -> tuple[str, ...]:
    """`dpo,bdhs,...` as the lab takes it: known names, each once, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {', '.join(unknown)} (known: {', '.join(METHODS)})")
    if not names:
        raise ValueError("name at least one method")
    if len(set(names)) != len(names):
        raise ValueError("a method is named twice")
    return tuple(names)


def check_costs(costs: Any, where: str = "result.costs") -> None:
    costs = loop_results._mapping(costs, where)
    loop_results._known(costs, tuple(METHODS), where)
    for method, entry in costs.items():
        at = f"{where}.{method}"
        entry = loop_results._mapping(entry, at)
        loop_results._known(entry, COST_KEYS, at)
        missing = [k for k in COST_KEYS if k not in entry]
        if missing:
            raise ValueError(f"{at}: missing {', '.join(missing)}")
        loop_results._count_or_null(entry["judge_calls"], f"{at}.judge_calls")
        loop_results._count_or_null(entry["generated_tokens"], f"{at}.generated_tokens")
        for key in ("judge_cost_usd", "train_s"):
            loop_results._number_or_null(entry[key], f"{at}.{key}")
            if entry[key] is not None and entry[key] < 0:
                raise ValueError(f"{at}.{key} must not be negative")


def check_result(result: Any) -> None:
    """Refuse anything but the `lab --json` contract (module docstring)."""
    loop_results.check_result(result, ROLES, EXTRA_KEYS)
    check_costs(result.get("costs", {}))
    failed = loop_results._mapping(result.get("failed", {}), "result.failed")
    loop_results._known(failed, tuple(METHODS), "result.failed")
    for method, error in failed.items():
        if not isinstance(error, str):
            raise ValueError(f"result.failed.{method} must be the error's text")
    if "reward_model" in result:
        entry = loop_results._mapping(result["reward_model"], "result.reward_model")
        loop_results._known(entry, ("heldout_accuracy",), "result.reward_model")
        if "heldout_accuracy" not in entry:
            raise ValueError("result.reward_model: missing heldout_accuracy")
        loop_results._fraction_or_null(
            entry["heldout_accuracy"], "result.reward_model.heldout_accuracy"
        )


def cost_cells(costs: Mapping[str, Any] | None) -> dict[str, str]:
    costs = costs or {}

    def shown(key: str, form: str) -> str:
        value = costs.get(key)
        return "—" if value is None else format(value, form)

    return {
        "judge_calls": shown("judge_calls", ","),
        "judge_cost_usd": "—"
        if costs.get("judge_cost_usd") is None
        else f"${costs['judge_cost_usd']:.4f}",
        "train_s": shown("train_s", ".0f"),
        "generated_tokens": shown("generated_tokens", ","),
    }


def table_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """loop_results.result_rows in the lab's roles, each with its method and costs."""
    rows = loop_results.result_rows(result, ROLES, LABELS)
    costs = result.get("costs") or {}
    for row in rows:
        row["method"] = METHODS.get(row["role"])
        row["costs"] = cost_cells(costs.get(row["role"])) if row["role"] in costs else None
    return rows


def delta_points(
    result: Mapping[str, Any], task: str
) -> list[tuple[str, float | None, list[float] | None]]:
    """(label, delta, ci95) per method on `task`, for the chart."""
    out: list[tuple[str, float | None, list[float] | None]] = []
    for role in ROLES[1:]:
        delta = ((result.get("deltas") or {}).get(role) or {}).get(task)
        if role in (result.get("deltas") or {}):
            out.append((LABELS[role], (delta or {}).get("delta"), (delta or {}).get("ci95")))
    return out


def method_names(names: Sequence[str]) -> list[str]:
    """`names` in the lab's order."""
    return [name for name in METHODS if name in names]
