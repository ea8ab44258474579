from django import forms
from django.conf import settings

from annotation.models import JudgeConfig
from annotation.selectors import judge_config_choices
from config.names import SAFE_NAME_MAX, SAFE_NAME_RULE, validate_safe_name
from datasets_app.core.imports import FORMATS
from datasets_app.models import Prompt, Source
from datasets_app.services.imports import UPLOAD_SUFFIXES


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="parquet, JSONL or CSV; or a zip of images with manifest.jsonl / manifest.csv"
    )
    source = forms.CharField(
        max_length=SAFE_NAME_MAX,
        validators=[validate_safe_name],
        help_text=f"new or existing source name: {SAFE_NAME_RULE}",
    )
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="prompts")
    skip_bad = forms.BooleanField(
        required=False, label="Skip bad rows", help_text="import the valid rows and report the rest"
    )

    def how_to_skip(self) -> str:
        """This form's way to import only the valid rows, for the job's error message."""
        label = self.fields["skip_bad"].label
        return f"tick “{label}” on the import page to import only the valid rows"

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith(UPLOAD_SUFFIXES):
            raise forms.ValidationError(f"Upload one of {', '.join(UPLOAD_SUFFIXES)}.")
        if upload.size > settings.IMPORT_MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is "
                f"{settings.IMPORT_MAX_UPLOAD_BYTES:,}. Use manage.py import_prompts."
            )
        return upload

    def clean_source(self):
        return self.cleaned_data["source"].strip()


def _json_object(text: str, what: str) -> dict:
    import json

    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(f"{what} must be a JSON object: {exc.msg}") from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{what} must be a JSON object")
    return value


class VersionForm(forms.Form):
    name = forms.CharField(
        max_length=SAFE_NAME_MAX, validators=[validate_safe_name], help_text=SAFE_NAME_RULE
    )
    strategy = forms.ChoiceField(choices=[])
    params = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text='JSON, e.g. {"gap": 2}'
    )
    filters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='JSON, e.g. {"eval_fraction": 0.1, "dedupe": true, "subsample": 1000}',
    )
    raters = forms.CharField(
        required=False, help_text="rater keys in order (judge:1,user:4); empty: all of the kinds"
    )
    kinds = forms.MultipleChoiceField(
        choices=[
            ("judge", "judges"),
            ("user", "annotators"),
            ("resolution", "resolutions"),
            ("import", "imported picks"),
        ],
        initial=["judge", "user", "resolution", "import"],
        widget=forms.CheckboxSelectMultiple,
    )
    combine = forms.ChoiceField(choices=[("mean", "mean"), ("precedence", "precedence")])
    source = forms.ModelChoiceField(Source.objects.order_by("name"), required=False)
    split = forms.ChoiceField(choices=[("", "any split"), *Prompt.Split.choices], required=False)
    include_heldout = forms.BooleanField(
        required=False,
        label="Include held-out prompts",
        help_text="curate test and validation prompts too, as training rows "
        "(off: they are left out and counted)",
    )
    seed = forms.IntegerField(initial=0)
    answer_judge = forms.ModelChoiceField(
        JudgeConfig.objects.order_by("name"),
        required=False,
        help_text="judge_answer_sft: whose own answers to train on (judge --mode answer)",
    )
    rewrite_judge = forms.ModelChoiceField(
        JudgeConfig.objects.order_by("name"),
        required=False,
        help_text="scienceqa_reformatted: rewrites long answers; corrupted: writes the error",
    )

    def __init__(self, *args, **kwargs):
        from datasets_app.core.curation import STRATEGIES

        super().__init__(*args, **kwargs)
        self.fields["strategy"].choices = [
            (name, f"{name} — {s.description}") for name, s in STRATEGIES.items()
        ]
        judges = judge_config_choices()  # checks each unused judge: once per form
        for field in ("answer_judge", "rewrite_judge"):
            self.fields[field].queryset = judges

    def clean_params(self) -> dict:
        return _json_object(self.cleaned_data["params"], "params")

    def clean_filters(self) -> dict:
        return _json_object(self.cleaned_data["filters"], "filters")

    def recipe(self) -> dict:
        d = self.cleaned_data
        return {
            "strategy": d["strategy"],
            # The checkbox turns it on; unticked leaves what the params JSON says.
            "params": {
                **d["params"],
                **({"include_heldout": True} if d["include_heldout"] else {}),
            },
            "filters": d["filters"],
            "rater_selection": {
                "raters": [r.strip() for r in d["raters"].split(",") if r.strip()],
                "kinds": d["kinds"],
                "combine": d["combine"],
            },
            "selection": {
                "source_id": d["source"].pk if d.get("source") else None,
                "split": d.get("split") or "",
            },
            "seed": d["seed"],
            "answer_judge_id": d["answer_judge"].pk if d.get("answer_judge") else None,
            "rewrite_judge_id": d["rewrite_judge"].pk if d.get("rewrite_judge") else None,
        }
