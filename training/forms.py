from django import forms

from annotation.models import JudgeConfig
from annotation.selectors import judge_config_choices
from config.names import SAFE_NAME_MAX, SAFE_NAME_RULE, validate_safe_name
from datasets_app.models import DatasetVersion, Prompt, Source
from training.core.evaluation import TASKS, parse_evaluation_specs
from training.core.generation import TEMPLATES, SamplingParams
from training.core.lab_results import METHODS as LAB_METHODS
from training.core.recipes.config import PRESETS, parse_overrides
from training.core.runs import ZERO_STAGES
from training.models import Checkpoint, TrainingJob
from training.services.lab import LabConfig


class GenerationForm(forms.Form):
    checkpoint = forms.ModelChoiceField(Checkpoint.objects.order_by("name"))
    source = forms.ModelChoiceField(Source.objects.order_by("name"), required=False)
    split = forms.ChoiceField(choices=[("", "any split"), *Prompt.Split.choices], required=False)
    subject = forms.CharField(required=False, max_length=100)
    prompt_ids = forms.CharField(
        required=False, help_text="comma-separated prompt ids (optional)", max_length=20_000
    )
    limit = forms.IntegerField(required=False, min_value=1)
    template = forms.ChoiceField(choices=[(t, t) for t in TEMPLATES], initial="plain")
    k = forms.IntegerField(min_value=1, max_value=64, initial=4, label="K (samples per prompt)")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7)
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=1.0)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=8192, initial=256)
    seed = forms.IntegerField(initial=0)
    steer = forms.CharField(
        required=False,
        max_length=200,
        label="SteerLM attributes",
        help_text="for a SteerLM checkpoint: e.g. helpfulness:4,correctness:4,coherence:4,"
        "complexity:2,verbosity:1 opens each answer",
    )
    backend = forms.ChoiceField(
        choices=[("auto", "auto"), ("transformers", "transformers"), ("vllm", "vllm")],
        initial="auto",
    )
    tensor_parallel_size = forms.IntegerField(
        min_value=1,
        initial=1,
        required=False,
        label="GPUs per model (vLLM --tp)",
        help_text="split the model over this many GPUs of one worker; more than 1 needs vllm",
    )

    def clean_prompt_ids(self) -> list[int] | None:
        raw = self.cleaned_data["prompt_ids"]
        try:
            return [int(x) for x in raw.replace(" ", "").split(",") if x] or None
        except ValueError:
            raise forms.ValidationError("Prompt ids are numbers separated by commas.") from None

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            self.params().validate()
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data

    def selection(self) -> dict:
        d = self.cleaned_data
        return {
            "source_id": d["source"].pk if d.get("source") else None,
            "split": d.get("split") or "",
            "subject": d.get("subject") or "",
            "prompt_ids": d.get("prompt_ids"),
            "limit": d.get("limit"),
        }

    def params(self) -> SamplingParams:
        d = self.cleaned_data
        return SamplingParams(
            k=d["k"],
            temperature=d["temperature"],
            top_p=d["top_p"],
            max_new_tokens=d["max_new_tokens"],
            seed=d["seed"],
            template=d["template"],
            steer=d.get("steer") or "",
        )

    def launch_kwargs(self) -> dict:
        """`generation.generation_launch`'s arguments but the user: the page's and the API's."""
        d = self.cleaned_data
        return {
            "checkpoint": d["checkpoint"],
            "selection": self.selection(),
            "params": self.params(),
            "backend": d["backend"],
            "tensor_parallel_size": d.get("tensor_parallel_size") or 1,
        }


class TrainingLaunchForm(forms.Form):
    recipe = forms.ChoiceField(choices=TrainingJob.Recipe.choices)
    dataset_version = forms.ModelChoiceField(
        DatasetVersion.objects.filter(status="ready").order_by("name", "-version"),
        help_text="DPO trains on a DPO version; SFT on an SFT one; SteerLM on a SteerLM one; "
        "KTO on a KTO one",
    )
    base_checkpoint = forms.ModelChoiceField(Checkpoint.objects.order_by("name"))
    preset = forms.ChoiceField(
        choices=[("", "none (project defaults)"), *((p, p) for p in PRESETS)], required=False
    )
    overrides = forms.CharField(
        widget=forms.Textarea(
            attrs={"rows": 6, "placeholder": "learning_rate=5e-5\nmax_steps=200"}
        ),
        required=False,
        max_length=10_000,
        help_text="one key=value per line (TrainConfig fields); values are read as JSON",
    )
    gpus = forms.IntegerField(min_value=1, max_value=64, initial=1, label="GPUs")
    zero = forms.ChoiceField(
        choices=[("", "none"), *((z, z) for z in ZERO_STAGES)],
        required=False,
        label="DeepSpeed",
    )
    name = forms.CharField(
        required=False,
        max_length=SAFE_NAME_MAX,
        validators=[validate_safe_name],
        help_text=f"{SAFE_NAME_RULE}; default: recipe-dataset-time",
    )
    evaluations = forms.CharField(
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "scienceqa var/shapes/scienceqa.parquet split=test"}
        ),
        required=False,
        max_length=10_000,
        help_text="run on the checkpoint when training ends: one 'TASK DATA [key=value ...]' "
        "per line",
    )

    def clean_evaluations(self) -> list[dict]:
        try:
            return parse_evaluation_specs(self.cleaned_data["evaluations"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_overrides(self) -> dict:
        try:
            return parse_overrides(self.cleaned_data["overrides"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def launch_kwargs(self) -> dict:
        """`trainings.training_launch`'s arguments but the user: the page's and the API's."""
        d = self.cleaned_data
        return {
            "recipe": d["recipe"],
            "dataset_version": d["dataset_version"],
            "base_checkpoint": d["base_checkpoint"],
            "preset": d["preset"] or None,
            "overrides": d["overrides"],
            "gpus": d["gpus"],
            "zero": d["zero"] or None,
            "name": d["name"],
            "evaluations": d["evaluations"],
        }


class EvaluationForm(forms.Form):
    checkpoint = forms.ModelChoiceField(Checkpoint.objects.order_by("name"))
    task = forms.ChoiceField(choices=[(t, t) for t in TASKS])
    data = forms.CharField(
        max_length=500, help_text="path of a local file in the task's public format"
    )
    prompt = forms.CharField(
        required=False, max_length=50, help_text="scienceqa: lmms (default), zero_shot or cot"
    )
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.0)
    samples = forms.IntegerField(min_value=1, max_value=64, initial=1)
    max_new_tokens = forms.IntegerField(min_value=1, max_value=8192, required=False)
    limit = forms.IntegerField(min_value=1, required=False)
    split = forms.CharField(required=False, max_length=50)
    all_contexts = forms.BooleanField(required=False, help_text="scienceqa: not only IMG items")
    judge = forms.ModelChoiceField(
        JudgeConfig.objects.none(), required=False, help_text="for the judged tasks"
    )
    steer = forms.CharField(
        required=False,
        max_length=200,
        label="SteerLM attributes",
        help_text="for a SteerLM checkpoint: the attribute string that opens each answer",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["judge"].queryset = judge_config_choices()

    def spec(self) -> dict:
        d = self.cleaned_data
        return {
            "task": d["task"],
            "data": d["data"].strip(),
            "prompt": d["prompt"] or None,
            "temperature": d["temperature"],
            "samples": d["samples"],
            "max_new_tokens": d["max_new_tokens"],
            "limit": d["limit"],
            "split": d["split"] or None,
            "all_contexts": d["all_contexts"],
            "judge_id": d["judge"].pk if d["judge"] else None,
            "steer": d["steer"].strip(),
        }


class CompareForm(forms.Form):
    checkpoints = forms.ModelMultipleChoiceField(Checkpoint.objects.order_by("name"))
    tasks = forms.MultipleChoiceField(choices=[(t, t) for t in TASKS], initial=["scienceqa"])
    baseline = forms.ModelChoiceField(
        Checkpoint.objects.order_by("name"),
        required=False,
        help_text="differences are to this checkpoint (default: the first chosen)",
    )


class LabForm(forms.Form):
    """The lab's options, as `manage.py lab` takes them (training/services/lab.py)."""

    methods = forms.MultipleChoiceField(
        choices=[(name, f"{m.label}: {m.objective}") for name, m in LAB_METHODS.items()],
        initial=list(LAB_METHODS),
        widget=forms.CheckboxSelectMultiple,
        help_text="run one after another on the gpu queue, in this order",
    )
    start = forms.ModelChoiceField(
        Checkpoint.objects.order_by("name"),
        required=False,
        empty_label="the instruction-tuned start (built once, cached)",
        help_text="every method trains from this checkpoint",
    )
    pool_images = forms.IntegerField(
        min_value=20, initial=LabConfig.pool_images, help_text="the prompt budget"
    )
    eval_images = forms.IntegerField(
        min_value=10,
        initial=LabConfig.eval_images,
        help_text="held-out images: one ScienceQA and six POPE items each",
    )
    k = forms.IntegerField(min_value=2, max_value=16, initial=LabConfig.k, label="K")
    temperature = forms.FloatField(min_value=0, max_value=2, initial=LabConfig.temperature)
    steps = forms.IntegerField(min_value=1, initial=LabConfig.steps, help_text="per method")
    bdhs_rho = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=LabConfig.bdhs_rho,
        label="BDHS rho",
        help_text="share of image-token attention masked (0: guidance and swap only)",
    )
    seed = forms.IntegerField(min_value=0, initial=0)

    def config(self) -> LabConfig:
        """The lab's configuration (the page's and the API's); LoopError when it cannot run."""
        from training.core import lab_results
        from training.services.lab import lab_config_from_options

        d = self.cleaned_data
        return lab_config_from_options(
            methods=tuple(lab_results.method_names(d["methods"])),
            start_name=d["start"].name if d["start"] else None,
            **{k: d[k] for k in ("pool_images", "eval_images", "k", "temperature", "steps")},
            bdhs_rho=d["bdhs_rho"],
            seed=d["seed"],
        )
