"""Reads for completions and ratings."""

from __future__ import annotations

from itertools import groupby

from django.db.models import QuerySet

from annotation.models import Completion, JudgeConfig
from datasets_app.selectors import prompt_conversation


def prompt_completions_by_checkpoint(*, prompt_id: int) -> list[tuple[object, list[Completion]]]:
    """A prompt's completions, grouped by the checkpoint that wrote them."""
    rows = (
        Completion.objects.filter(prompt_id=prompt_id)
        .select_related("checkpoint")
        .order_by("checkpoint__name", "template", "sampling_hash", "sample_index")
    )
    return [(ckpt, list(group)) for ckpt, group in groupby(rows, key=lambda c: c.checkpoint)]


def judge_config_choices() -> QuerySet[JudgeConfig]:
    """The judges worth offering in a dropdown: those with ratings or answers kept, and
    those that can be called from here now. A configuration saved before launches were
    checked (no key, a folder that does not exist) and never used is left out; its row
    stays, since nothing refers to it and a later check may pass (a key set since)."""
    from django.db.models import Exists, OuterRef

    from annotation.models import JudgeCall, Rating
    from annotation.services.judging import judge_config_check

    configs = JudgeConfig.objects.annotate(
        used=Exists(Rating.objects.filter(judge_id=OuterRef("pk")))
        | Exists(JudgeCall.objects.filter(judge_id=OuterRef("pk"), status=JudgeCall.Status.OK))
    )
    usable = set(configs.filter(used=True).values_list("pk", flat=True))
    for config in configs.filter(used=False):
        try:
            judge_config_check(
                provider=config.provider,
                model=config.model,
                base_url=config.base_url,
                load_checkpoint=False,
            )
        except ValueError:
            continue
        usable.add(config.pk)
    return JudgeConfig.objects.filter(pk__in=usable).order_by("name")


def rater_choices() -> list[tuple[str, str]]:
    """Every rater with at least one rating, as ("judge:ID" | "user:ID", label)."""
    from django.contrib.auth import get_user_model

    from annotation.models import JudgeConfig, Rating

    judge_ids = Rating.objects.filter(judge__isnull=False).values("judge_id").distinct()
    user_ids = Rating.objects.filter(user__isnull=False).values("user_id").distinct()
    judges = [
        (f"judge:{j.pk}", f"judge {j.name}") for j in JudgeConfig.objects.filter(pk__in=judge_ids)
    ]
    users = [
        (f"user:{u.pk}", f"annotator {u.username}")
        for u in get_user_model().objects.filter(pk__in=user_ids).order_by("username")
    ]
    return judges + users


def rater_scores(rater: str) -> tuple[dict[int, dict[str, int]], dict[int, int]]:
    """Scores by completion id for one rater, and the prompt of each completion."""
    from annotation.models import ATTRIBUTES, Rating

    kind, _, pk = rater.partition(":")
    if kind not in ("judge", "user") or not pk.isdigit():
        raise ValueError(f"unknown rater {rater!r}")
    ratings = Rating.objects.filter(**{f"{kind}_id": int(pk)})
    if kind == "user":
        ratings = ratings.filter(kind=Rating.Kind.ANNOTATION)  # not their resolutions
    rows = ratings.values("completion_id", "completion__prompt_id", *ATTRIBUTES)
    scores = {r["completion_id"]: {a: r[a] for a in ATTRIBUTES} for r in rows}
    prompts = {r["completion_id"]: r["completion__prompt_id"] for r in rows}
    return scores, prompts


def campaigns_for(user) -> list:
    """Active campaigns with this user's progress (two queries whatever the count)."""
    from django.db.models import Count, Q

    from annotation.models import Assignment, Campaign

    campaigns = list(Campaign.objects.filter(is_active=True).order_by("name"))
    mine = (
        Assignment.objects.filter(annotator=user, item__campaign__in=campaigns)
        .values("item__campaign_id")
        .annotate(
            done=Count("id", filter=Q(status=Assignment.Status.SUBMITTED)),
            open=Count("id", filter=Q(status=Assignment.Status.ASSIGNED)),
        )
    )
    by_campaign = {row["item__campaign_id"]: row for row in mine}
    for campaign in campaigns:
        row = by_campaign.get(campaign.pk, {})
        campaign.my_done = row.get("done", 0)
        campaign.my_open = row.get("open", 0)
    return campaigns


def item_page_context(assignment) -> dict:
    from annotation.core.guide import GUIDE
    from annotation.core.markdown import render_markdown
    from annotation.models import ATTRIBUTES, Completion, PairPick, Rating

    item, user = assignment.item, assignment.annotator
    campaign, prompt = item.campaign, item.prompt
    by_id = Completion.objects.in_bulk(item.completion_ids)
    mine = {
        r["completion_id"]: {a: r[a] for a in ATTRIBUTES}
        for r in Rating.objects.filter(
            completion_id__in=item.completion_ids, user=user, kind=Rating.Kind.ANNOTATION
        ).values("completion_id", *ATTRIBUTES)
    }
    suggestions = {}
    if campaign.show_judge_suggestions and campaign.suggestion_judge_id:
        suggestions = {
            r["completion_id"]: {a: r[a] for a in ATTRIBUTES}
            for r in Rating.objects.filter(
                completion_id__in=item.completion_ids, judge_id=campaign.suggestion_judge_id
            ).values("completion_id", *ATTRIBUTES)
        }
    pick = PairPick.objects.filter(prompt_id=item.prompt_id, annotator=user).first()
    cards = [
        {
            "number": n,
            "id": cid,
            "html": render_markdown(by_id[cid].text),
            "suggestion": suggestions.get(cid),
        }
        for n, cid in enumerate(item.completion_ids, start=1)
        if cid in by_id
    ]
    initial = {
        "scores": {str(cid): mine[cid] for cid in mine},
        "best": pick.chosen_id if pick else None,
        "worst": pick.rejected_id if pick else None,
        "tie": bool(pick and pick.is_tie),
        "comment": pick.comment if pick else "",
    }
    mine_all = assignment.annotator.assignments.filter(item__campaign=campaign)
    done = mine_all.filter(status="submitted").count()
    # "n of N": this item's place in the annotator's walk through the campaign (items are
    # handed out shuffled, so an item's own rank would say nothing). A submitted item,
    # reopened by undo, keeps the place it was submitted at; an open one comes next.
    position = (
        mine_all.filter(status="submitted", submitted_at__lte=assignment.submitted_at).count()
        if assignment.status == "submitted" and assignment.submitted_at
        else done + 1
    )
    return {
        "assignment": assignment,
        "campaign": campaign,
        "prompt": prompt,
        "conversation": prompt_conversation(prompt),
        "cards": cards,
        "attributes": [(a, [(s, GUIDE[a][s]) for s in range(5)]) for a in ATTRIBUTES],
        "config": {
            "assignment": assignment.pk,
            "completionIds": [c["id"] for c in cards],
            "attributes": list(ATTRIBUTES),
            "initial": initial,
            "submitted": assignment.status == "submitted",
        },
        "suggestion_judge": campaign.suggestion_judge if suggestions else None,
        "progress": {
            "done": done,
            "assigned": mine_all.filter(status__in=["assigned", "submitted"]).count(),
            "position": position,
            "items": campaign.item_count,
        },
    }


def review_rows(campaign) -> list[dict]:
    """Each item of a campaign with how many raters it has and its largest disagreement."""
    from annotation.models import ATTRIBUTES, Rating

    items = list(campaign.items.select_related("prompt").order_by("id"))
    completion_ids = [cid for item in items for cid in item.completion_ids]
    spread: dict[int, int] = {}
    raters: dict[int, set] = {}
    values: dict[tuple[int, str], list[int]] = {}
    for row in Rating.objects.filter(
        completion_id__in=completion_ids, kind=Rating.Kind.ANNOTATION
    ).values("completion_id", "user_id", "judge_id", *ATTRIBUTES):
        for a in ATTRIBUTES:
            values.setdefault((row["completion_id"], a), []).append(row[a])
        raters.setdefault(row["completion_id"], set()).add((row["user_id"], row["judge_id"]))
    for (cid, _a), scores in values.items():
        spread[cid] = max(spread.get(cid, 0), max(scores) - min(scores))
    return [
        {
            "item": item,
            "raters": len(set().union(*(raters.get(c, set()) for c in item.completion_ids))),
            "spread": max((spread.get(c, 0) for c in item.completion_ids), default=0),
        }
        for item in items
    ]


def review_context(item) -> dict:
    """Every rater's scores for every completion of an item, disagreement marked."""
    from annotation.core.guide import GUIDE
    from annotation.core.markdown import render_markdown
    from annotation.models import ATTRIBUTES, Completion, PairPick, Rating, RewardScore

    by_id = Completion.objects.in_bulk(item.completion_ids)
    ratings = Rating.objects.filter(completion_id__in=item.completion_ids).select_related(
        "user", "judge"
    )
    grouped: dict[int, list] = {cid: [] for cid in item.completion_ids}
    for rating in ratings:
        grouped[rating.completion_id].append(rating)
    # Reward models' scalars, beside the ratings (a reward:CHECKPOINT judge gives no scores).
    rewards: dict[int, list[tuple[str, float]]] = {cid: [] for cid in item.completion_ids}
    for score in RewardScore.objects.filter(completion_id__in=item.completion_ids).select_related(
        "judge"
    ):
        rewards[score.completion_id].append((score.judge.name, score.reward))
    cards = []
    for n, cid in enumerate(item.completion_ids, start=1):
        rows = [r for r in grouped[cid] if r.kind == Rating.Kind.ANNOTATION]
        disagreement = (
            {
                a: (max(getattr(r, a) for r in rows) - min(getattr(r, a) for r in rows)) >= 2
                for a in ATTRIBUTES
            }
            if rows
            else {}
        )
        resolution = next((r for r in grouped[cid] if r.kind == Rating.Kind.RESOLUTION), None)
        cards.append(
            {
                "number": n,
                "id": cid,
                "html": render_markdown(by_id[cid].text) if cid in by_id else "",
                "ratings": rows,
                "rewards": rewards[cid],
                "disagreement": disagreement,
                "resolution": resolution,
            }
        )
    picks = PairPick.objects.filter(
        prompt_id=item.prompt_id, annotator__isnull=False
    ).select_related("annotator")
    return {
        "item": item,
        "prompt": item.prompt,
        "conversation": prompt_conversation(item.prompt),
        "cards": cards,
        "attributes": ATTRIBUTES,
        "guide": GUIDE,
        "picks": picks,
        "numbers": {cid: n for n, cid in enumerate(item.completion_ids, start=1)},
    }


def judge_rows() -> list[dict]:
    """Every judge with its ratings, calls, failures and cost, for the judges' list."""
    from django.db.models import Count, Q, Sum

    from annotation.models import JudgeConfig

    judges = JudgeConfig.objects.annotate(
        n_ratings=Count("ratings", distinct=True),
        n_calls=Count("calls", distinct=True),
        n_failed=Count("calls", filter=Q(calls__status="failed"), distinct=True),
        n_audits=Count("audits", distinct=True),
    ).order_by("name")
    costs = dict(
        JudgeConfig.objects.annotate(cost=Sum("calls__cost_usd")).values_list("pk", "cost")
    )
    return [{"judge": j, "cost_usd": costs.get(j.pk) or 0.0} for j in judges]


def judge_card(judge) -> dict:
    """A judge's reliability card: its record in calls, and its latest audit."""
    from django.db.models import Sum

    from annotation.core.judges.base import ATTRIBUTES

    calls = judge.calls.all()
    total, failed = calls.count(), calls.filter(status="failed").count()
    audit = judge.audits.first()
    result = audit.result if audit else {}
    return {
        "judge": judge,
        "attributes": ATTRIBUTES,
        "ratings": judge.ratings.count(),
        "rewards": judge.reward_scores.count(),
        "calls": total,
        "failed": failed,
        "failure_rate": failed / total if total else None,
        "cost_usd": calls.aggregate(cost=Sum("cost_usd"))["cost"] or 0.0,
        "audit": audit,
        "result": result,
        "rows": [
            {
                "attribute": a,
                "delta": (result.get("mean_abs_delta") or {}).get(a),
                "alpha": (result.get("self_alpha") or {}).get(a),
            }
            for a in ATTRIBUTES
        ],
        "audits": judge.audits.all()[:20],
        "humans": _human_agreement(judge),
        "truth": _truth_agreement(judge),
        "members": _panel_agreement(judge) if judge.provider == "panel" else None,
    }


def _panel_agreement(panel) -> list[dict]:
    """Each pair of a panel's members: how far they agree where both rated."""
    from itertools import combinations

    from annotation.core.agreement import agreement
    from annotation.services.judging import panel_members

    try:
        members = panel_members(panel.model)
    except ValueError:
        return []
    scores = {m.pk: rater_scores(f"judge:{m.pk}") for m in members}
    rows = []
    for a, b in combinations(members, 2):
        (sa, pa), (sb, pb) = scores[a.pk], scores[b.pk]
        found = agreement(sa, sb, {**pa, **pb})
        pearsons = [x.pearson for x in found.attributes if x.pearson is not None]
        rows.append(
            {
                "a": a,
                "b": b,
                "completions": found.completions,
                "mean_pearson": sum(pearsons) / len(pearsons) if pearsons else None,
                "pair_agreement": found.pair_agreement,
            }
        )
    return rows


def _human_agreement(judge) -> dict | None:
    """The judge against the annotators' mean on the completions both rated."""
    from annotation.core.agreement import agreement
    from annotation.models import ATTRIBUTES, Rating

    scores, prompts = rater_scores(f"judge:{judge.pk}")
    humans: dict[int, dict[str, list[int]]] = {}
    for r in Rating.objects.filter(
        completion_id__in=list(scores), user__isnull=False, kind=Rating.Kind.ANNOTATION
    ).values("completion_id", *ATTRIBUTES):
        for a in ATTRIBUTES:
            humans.setdefault(r["completion_id"], {}).setdefault(a, []).append(r[a])
    if not humans:
        return None
    mean = {c: {a: sum(v) / len(v) for a, v in by.items()} for c, by in humans.items()}
    found = agreement(scores, mean, prompts)
    pearsons = [x.pearson for x in found.attributes if x.pearson is not None]
    return {
        "completions": found.completions,
        "attributes": found.attributes,
        "mean_pearson": sum(pearsons) / len(pearsons) if pearsons else None,
        "pair_agreement": found.pair_agreement,
        "prompts": found.prompts_compared,
    }


def _truth_agreement(judge) -> dict | None:
    """Where the prompt has a known answer: how often the judge's correctness score puts
    a right answer above a wrong one to the same prompt (a tie counts half)."""
    from annotation.core.agreement import pairwise_agreement
    from annotation.models import Rating
    from datasets_app.services.exports import prompt_reference
    from training.core.verifiable import answer_reward

    rows = Rating.objects.filter(judge=judge).select_related("completion__prompt")
    correctness: dict[int, float] = {}
    right: dict[int, float] = {}
    groups: dict[int, list[int]] = {}
    for rating in rows.iterator(chunk_size=500):
        completion = rating.completion
        reference = prompt_reference(completion.prompt)
        if not reference:
            continue
        correctness[completion.pk] = rating.correctness
        right[completion.pk] = answer_reward(completion.text, reference)
        groups.setdefault(completion.prompt_id, []).append(completion.pk)
    found = pairwise_agreement(list(groups.values()), correctness, right)
    return {"rate": found.rate, "pairs": found.pairs} if found.pairs else None


def access_assignment(user, assignment_id: int):
    """The user's own assignment (the item page's and the API's rule): anyone else's is a
    404, not a 403, so that ids reveal nothing."""
    from django.http import Http404

    from annotation.models import Assignment

    assignment = (
        Assignment.objects.select_related("item__campaign", "item__prompt__source")
        .filter(pk=assignment_id, annotator_id=user.pk)
        .first()
    )
    if assignment is None:
        raise Http404("no such assignment")
    return assignment
