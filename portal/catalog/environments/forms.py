"""Environment forms: the recipe as text people type, import, and saving a workspace."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from jobs.forms import SecretTextarea, lines_parse
from portal.accounts.models import Team
from portal.catalog.environments.exchange import environment_file_text
from portal.catalog.environments.services import Recipe
from portal.catalog.models import EnvironmentRevision, Image, ImageStatus
from portal.core.secrets import MASK
from portal.quotas.models import ResourceProfile

MONO = {"class": "mono", "spellcheck": "false"}


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _pairs(text: str) -> dict[str, str]:
    try:
        return {name: value for _, name, value in lines_parse(text)}
    except ValidationError as error:
        raise ValidationError(error.messages) from None


class RecipeForm(forms.Form):
    """What every revision has; the create form adds the environment's own fields."""

    base_image = forms.ModelChoiceField(
        queryset=None, to_field_name="slug", empty_label=None, help_text="A catalog image; its digest is pinned."
    )
    pip = forms.CharField(
        required=False, label="pip packages", widget=forms.Textarea(attrs={"rows": 4, **MONO}),
        help_text="One requirement a line (e.g. scikit-learn==1.5.2). The build locks the exact versions and hashes.",
    )  # fmt: skip
    apt = forms.CharField(
        required=False, label="Debian packages", widget=forms.Textarea(attrs={"rows": 2, **MONO}),
        help_text="One package a line.",
    )  # fmt: skip
    env = forms.CharField(
        required=False, label="Environment", widget=forms.Textarea(attrs={"rows": 3, **MONO}),
        help_text="One NAME=value a line, set in every workspace and job started from it.",
    )  # fmt: skip
    secret_env = forms.CharField(
        required=False, label="Secret environment",
        widget=SecretTextarea(attrs={"rows": 2, "class": "mono secret-input", "spellcheck": "false",
                                     "autocomplete": "off"}),
        help_text="One NAME=value a line. Stored encrypted; only the names are shown afterwards.",
    )  # fmt: skip
    keep_secrets = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Keep these secrets",
        help_text="Their values stay as they are; a line above with the same name replaces one.",
    )  # fmt: skip
    profile = forms.ModelChoiceField(
        queryset=ResourceProfile.objects.filter(is_active=True), to_field_name="slug", required=False,
        empty_label="(none)", label="Default size", help_text="What workspaces and jobs get unless they choose.",
    )  # fmt: skip
    startup_script = forms.CharField(
        required=False, label="Start-up script", widget=forms.Textarea(attrs={"rows": 4, **MONO}),
        help_text="Shell lines run (sourced by sh) before every workspace's and job's command; a failing line "
        "stops it. Part of the image: changing it makes a new revision.",
    )  # fmt: skip

    def __init__(self, *args, user, previous: EnvironmentRevision | None = None, **kwargs):
        if previous is not None and not kwargs.get("data") and not args:
            kwargs["initial"] = {**self.initial_from(previous), **kwargs.get("initial", {})}
        super().__init__(*args, **kwargs)
        self.fields["base_image"].queryset = Image.objects.visible_to(user).filter(status=ImageStatus.READY)
        self.fields["base_image"].label_from_instance = lambda image: f"{image.name} ({image.slug})"
        names = previous.secret_env_names if previous is not None else []
        self.fields["keep_secrets"].choices = [(n, n) for n in names]
        if not names:
            del self.fields["keep_secrets"]

    @staticmethod
    def initial_from(revision: EnvironmentRevision) -> dict:
        return {
            "base_image": revision.base_revision.image.slug,
            "pip": "\n".join(revision.pip_requirements),
            "apt": "\n".join(revision.apt_packages),
            "env": "\n".join(f"{k}={v}" for k, v in revision.env.items()),
            "keep_secrets": list(revision.secret_env_names),
            "profile": revision.profile.slug if revision.profile else None,
            "startup_script": revision.startup_script,
        }

    def clean_env(self) -> dict:
        return _pairs(self.cleaned_data["env"])

    def clean_secret_env(self) -> dict:
        return _pairs(self.cleaned_data["secret_env"])

    def recipe(self) -> Recipe:
        data = self.cleaned_data
        secrets = {**dict.fromkeys(data.get("keep_secrets") or [], MASK), **data["secret_env"]}
        return Recipe(
            base_image=data["base_image"], pip=_lines(data["pip"]), apt=_lines(data["apt"]), env=data["env"],
            secret_env=secrets, profile=data["profile"], startup_script=data["startup_script"],
        )  # fmt: skip


class EnvironmentForm(RecipeForm):
    slug = forms.CharField(max_length=36, help_text="Lowercase letters, digits and dashes; launch it as slug@revision.")
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    team = forms.ModelChoiceField(queryset=None, to_field_name="slug", empty_label=None)
    shared = forms.BooleanField(
        required=False, initial=True, label="Share with the team", help_text="Else only you see and launch it."
    )
    field_order = ["slug", "name", "description", "team", "shared"]

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(memberships__user=user).order_by("slug")


class ImportForm(forms.Form):
    team = forms.ModelChoiceField(queryset=None, to_field_name="slug", empty_label=None)
    file = forms.FileField(required=False, label="Environment file", help_text="A YAML file exported by Dockyard.")
    text = forms.CharField(
        required=False, label="…or paste it", widget=forms.Textarea(attrs={"rows": 8, **MONO}), strip=False
    )
    slug = forms.CharField(required=False, max_length=36, help_text="Empty: the slug in the file.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(memberships__user=user).order_by("slug")

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload is not None:
            data["text"] = environment_file_text(upload)
        if not (data.get("text") or "").strip():
            raise ValidationError("Choose an environment file or paste one.")
        return data


class SaveWorkspaceForm(forms.Form):
    """Which of the proposed pins to keep, and where they go."""

    packages = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Packages to add")
    target = forms.ChoiceField(widget=forms.RadioSelect, label="Save as")
    slug = forms.CharField(required=False, max_length=36, help_text="For a new environment.")
    name = forms.CharField(required=False, max_length=100)

    def __init__(self, *args, proposed: list[str], started_from: EnvironmentRevision | None, may_revise: bool, **kw):
        super().__init__(*args, **kw)
        self.fields["packages"].choices = [(p, p) for p in proposed]
        self.fields["packages"].initial = list(proposed)
        targets = [("new", "A new environment (private to you until you share it)")]
        if started_from is not None and may_revise:
            targets.insert(0, ("revise", f"A new revision of {started_from.environment.name} ({started_from.ref})"))
        self.fields["target"].choices = targets
        self.fields["target"].initial = targets[0][0]

    def clean(self):
        data = super().clean()
        if data.get("target") == "new" and not (data.get("slug") and data.get("name")):
            raise ValidationError("Give the new environment a slug and a name.")
        return data
