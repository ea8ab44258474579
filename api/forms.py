from django import forms


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, required=False, help_text="what the token is for, e.g. “judge runner”"
    )
