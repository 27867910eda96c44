"""Catalog forms for staff: image details, the build or pull spec, deprecation."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from portal.catalog.models import Image, SourceType
from portal.catalog.services import SourceSpec


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class ImageDetailsForm(forms.ModelForm):
    default_command = forms.CharField(
        required=False,
        help_text="The command that starts JupyterLab for workspaces, one argument per line "
        "(empty: the image is for jobs only).",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    class Meta:
        model = Image
        fields = [
            "slug",
            "name",
            "description",
            "framework",
            "framework_version",
            "python_version",
            "cuda_version",
            "gpu_capable",
            "all_teams",
            "teams",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 3}), "teams": forms.CheckboxSelectMultiple}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["slug"].disabled = True
            self.initial["default_command"] = "\n".join(self.instance.default_command)

    def clean_default_command(self) -> list[str]:
        return list(_lines(self.cleaned_data["default_command"]))

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("all_teams") and not cleaned.get("teams"):
            raise ValidationError("Choose the teams that may use this image, or make it visible to all teams.")
        return cleaned

    def details(self) -> dict:
        keys = [f for f in self.Meta.fields if f not in ("slug", "teams")] + ["default_command"]
        return {key: self.cleaned_data[key] for key in keys}


class SourceForm(forms.Form):
    source_type = forms.ChoiceField(choices=SourceType.choices, initial=SourceType.BUILD, label="Source")
    pull_ref = forms.CharField(required=False, label="Image reference to pull", help_text="e.g. pytorch/pytorch:2.5.1")
    base_image = forms.CharField(required=False, help_text="Empty: the local Dockyard base image.")
    apt_packages = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), help_text="Debian packages, one per line."
    )
    pip_requirements = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="pip requirements, one per line (e.g. numpy>=2). No options or URLs.",
    )

    @classmethod
    def initial_from(cls, revision) -> dict:
        return {
            "source_type": revision.source_type,
            "pull_ref": revision.pull_ref,
            "base_image": revision.base_image,
            "apt_packages": "\n".join(revision.apt_packages),
            "pip_requirements": "\n".join(revision.pip_requirements),
        }

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("source_type") == SourceType.PULL and not cleaned.get("pull_ref"):
            self.add_error("pull_ref", "Give the image reference to pull.")
        return cleaned

    def spec(self) -> SourceSpec:
        data = self.cleaned_data
        return SourceSpec(
            source_type=data["source_type"],
            pull_ref=data["pull_ref"],
            base_image=data["base_image"],
            apt_packages=_lines(data["apt_packages"]),
            pip_requirements=_lines(data["pip_requirements"]),
        )


class DeprecateForm(forms.Form):
    successor = forms.ModelChoiceField(queryset=Image.objects.none(), required=False, empty_label="(none)")
    message = forms.CharField(required=False, max_length=300, help_text="Shown to people who try to use it.")

    def __init__(self, *args, image: Image, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["successor"].queryset = Image.objects.catalog().exclude(pk=image.pk).exclude(status="deprecated")
