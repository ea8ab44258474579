from django import forms

from annotation.core.judges.prompt import DEFAULT_VERSION, prompt_versions
from annotation.core.judges.runner import RunLimits
from annotation.models import JudgeConfig
from annotation.selectors import judge_config_choices
from datasets_app.models import Prompt, Source
from training.models import Checkpoint


class JudgeForm(forms.Form):
    judge = forms.CharField(
        initial="oracle",
        max_length=300,
        help_text=(
            "oracle, gemini:MODEL, openai:MODEL, local:PATH, reward:CHECKPOINT or "
            "panel:mean|median:ID,ID,... (the judges with those ids)"
        ),
    )
    base_url = forms.CharField(
        required=False, max_length=300, help_text="an OpenAI-compatible server or a proxy"
    )
    prompt_version = forms.ChoiceField(
        choices=[],
        initial=DEFAULT_VERSION,
        help_text="v2 shows the whole conversation and numbers the images; v1 one image only",
    )
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.0)
    source = forms.ModelChoiceField(Source.objects.order_by("name"), required=False)
    split = forms.ChoiceField(choices=[("", "any split"), *Prompt.Split.choices], required=False)
    checkpoint = forms.ModelChoiceField(
        Checkpoint.objects.order_by("name"),
        required=False,
        help_text="only the completions of this checkpoint",
    )
    limit = forms.IntegerField(required=False, min_value=1, help_text="at most this many prompts")
    k_per_call = forms.IntegerField(min_value=1, max_value=32, initial=4, label="K per call")
    concurrency = forms.IntegerField(min_value=1, max_value=256, initial=8)
    requests_per_minute = forms.FloatField(required=False, min_value=0.1)
    tokens_per_minute = forms.FloatField(required=False, min_value=1)
    max_cost_usd = forms.FloatField(required=False, min_value=0.0001, label="Max cost (USD)")
    mode = forms.ChoiceField(
        choices=[("rate", "rate K at a time"), ("pairwise", "compare two at a time")],
        initial="rate",
        required=False,  # left out: rate
        help_text="pairwise: every pair of a prompt's completions, wins minus losses",
    )
    both_orders = forms.BooleanField(
        required=False, help_text="pairwise: ask each pair in both orders (position control)"
    )
    batch = forms.BooleanField(
        required=False,
        label="Batch (half price)",
        help_text="one provider batch (OpenAI, Gemini); lines that fail are asked online",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["prompt_version"].choices = [(v, v) for v in prompt_versions()]

    def limits(self) -> RunLimits:
        d = self.cleaned_data
        return RunLimits(
            concurrency=d["concurrency"],
            requests_per_minute=d.get("requests_per_minute"),
            tokens_per_minute=d.get("tokens_per_minute"),
            max_cost_usd=d.get("max_cost_usd"),
        )

    def selection(self) -> dict:
        d = self.cleaned_data
        return {
            "source_id": d["source"].pk if d.get("source") else None,
            "split": d.get("split") or "",
            "limit": d.get("limit"),
        }

    def judge_spec(self) -> dict:
        """`judging.judge_config_from_spec`'s arguments: the page's and the API's."""
        d = self.cleaned_data
        return {
            "spec": d["judge"],
            "prompt_version": d["prompt_version"],
            "temperature": d["temperature"],
            "base_url": d["base_url"].strip(),
        }

    def launch_kwargs(self) -> dict:
        """`judging.judge_launch`'s arguments but the judge and the user."""
        d = self.cleaned_data
        return {
            "selection": self.selection(),
            "checkpoint_id": d["checkpoint"].pk if d.get("checkpoint") else None,
            "k_per_call": d["k_per_call"],
            "limits": self.limits(),
            "batch": d.get("batch", False),
            "mode": d.get("mode") or "rate",
            "both_orders": d.get("both_orders", False),
        }


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200)
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False)
    source = forms.ModelChoiceField(Source.objects.order_by("name"), required=False)
    split = forms.ChoiceField(choices=[("", "any split"), *Prompt.Split.choices], required=False)
    limit = forms.IntegerField(required=False, min_value=1, help_text="at most this many prompts")
    checkpoints = forms.ModelMultipleChoiceField(
        Checkpoint.objects.order_by("name"),
        required=False,
        help_text="whose completions to compare (none chosen: all)",
    )
    overlap = forms.IntegerField(
        min_value=1, max_value=20, initial=1, help_text="annotators per prompt"
    )
    assignment_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=30)
    show_judge_suggestions = forms.BooleanField(
        required=False, help_text="show a judge's scores as hints (they anchor people)"
    )
    suggestion_judge = forms.ModelChoiceField(JudgeConfig.objects.none(), required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["suggestion_judge"].queryset = judge_config_choices()

    def service_kwargs(self) -> dict:
        d = self.cleaned_data
        return {
            "name": d["name"],
            "instructions": d["instructions"],
            "selection": {
                "source_id": d["source"].pk if d.get("source") else None,
                "split": d.get("split") or "",
                "limit": d.get("limit"),
            },
            "checkpoint_ids": [c.pk for c in d["checkpoints"]],
            "overlap": d["overlap"],
            "assignment_minutes": d["assignment_minutes"],
            "show_judge_suggestions": d["show_judge_suggestions"],
            "suggestion_judge": d.get("suggestion_judge"),
        }


def resolution_payload(post, completion_ids: list[int]) -> dict:
    """The review form's radio buttons (score-<completion>-<attribute>) as a submission."""
    from annotation.models import ATTRIBUTES

    return {
        "scores": {
            str(cid): {a: post.get(f"score-{cid}-{a}") for a in ATTRIBUTES}
            for cid in completion_ids
        },
        "comment": post.get("comment", ""),
        "token": "resolution",
    }
