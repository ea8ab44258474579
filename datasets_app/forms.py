from django import forms
from django.conf import settings

from datasets_app.imports import FORMATS
from datasets_app.services import UPLOAD_SUFFIXES


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="parquet, JSONL or CSV; or a zip of images with manifest.jsonl / manifest.csv"
    )
    source = forms.CharField(max_length=200, help_text="new or existing source name")
    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="prompts")
    skip_bad = forms.BooleanField(
        required=False, help_text="import the valid rows and report the rest"
    )

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
