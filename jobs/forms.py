"""The submit form: a job, or a sweep of jobs, written as text people can type.

Env, secrets and parameters are `NAME=value` lines; a sweep grid is `name=v1,v2,...` lines.
The pure rules in `jobs.spec` check what is typed here, so the form says what is wrong
before anything is stored; the services check everything again when they submit.
"""

from __future__ import annotations

import json
import math

from django import forms
from django.core.exceptions import ValidationError

from jobs import spec
from jobs.services import MAX_PRIORITY, JobSpec
from portal.catalog.environments.fields import ImageOrEnvironmentField
from portal.catalog.environments.selectors import environment_launch_choices
from portal.catalog.models import EnvironmentRevision, Image, ImageStatus
from portal.quotas.models import ResourceProfile

CODE_NONE, CODE_UPLOAD, CODE_WORKSPACE = "none", "upload", "workspace"


def value_parse(text: str):
    """A typed value: true/false, a whole number, a decimal, or else the text itself
    ("quoted" text stays text, so "0.1" in quotes is the string 0.1)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is int or math.isfinite(value):
            return value
    return text


def lines_parse(text: str, *, what: str = "NAME=value") -> list[tuple[int, str, str]]:
    """(line number, name, value) of each `name=value` line; blank lines and # comments skipped."""
    pairs, seen = [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValidationError(f"Line {number}: write {what}.")
        if name in seen:
            raise ValidationError(f"Line {number}: {name} is given twice.")
        seen.add(name)
        pairs.append((number, name, value.strip()))
    return pairs


def _checked(rule, value, field: str):
    """Runs a rule from `jobs.spec`, turning its {field: message} error into this field's error."""
    try:
        return rule(value)
    except ValidationError as error:
        raise ValidationError(error.message_dict.get(field) or error.messages) from None


class SecretTextarea(forms.Textarea):
    """A textarea whose value is never written back into the page (e.g. when the form has errors)."""

    def format_value(self, value):
        return None


class JobForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="For a sweep, jobs are named name-1, name-2, …")
    team = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="slug")
    image = ImageOrEnvironmentField(
        queryset=None, empty_label=None, to_field_name="slug", label="Image",
        help_text="A catalog image, or a built revision of one of your team's environments.",
    )  # fmt: skip
    profile = forms.ModelChoiceField(queryset=None, to_field_name="slug", label="Size")
    command = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
        help_text='A shell command (run by sh -c), or a JSON list of arguments such as ["python3", "train.py"]. '
        "{name} is replaced by a parameter's value.",
    )
    parameters = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
        help_text="One NAME=value a line; numbers and true/false are typed. Each becomes PARAM_<NAME>.",
    )
    env = forms.CharField(
        required=False,
        label="Environment",
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
        help_text="One NAME=value a line.",
    )
    secret_env = forms.CharField(
        required=False,
        label="Secret environment",
        widget=SecretTextarea(
            attrs={"rows": 2, "class": "mono secret-input", "spellcheck": "false", "autocomplete": "off"}
        ),
        help_text="One NAME=value a line. Stored encrypted; only the names are shown afterwards.",
    )
    priority = forms.IntegerField(
        initial=0, min_value=-MAX_PRIORITY, max_value=MAX_PRIORITY, help_text="Above 0 for team admins only."
    )
    timeout_s = forms.IntegerField(
        required=False, min_value=1, label="Timeout (seconds)", help_text="Empty: no timeout."
    )
    max_retries = forms.IntegerField(initial=0, min_value=0, label="Retries", help_text="Runs again if it fails.")
    code_from = forms.ChoiceField(
        label="Code",
        initial=CODE_NONE,
        widget=forms.RadioSelect,
        choices=[
            (CODE_NONE, "None (the image has everything)"),
            (CODE_UPLOAD, "Upload a zip or tar"),
            (CODE_WORKSPACE, "Snapshot a folder of one of my running workspaces"),
        ],
    )
    code = forms.FileField(required=False, label="Archive", help_text="Unpacked read-only at /code.")
    code_workspace = forms.ModelChoiceField(queryset=None, required=False, label="Workspace")
    code_path = forms.CharField(
        required=False, max_length=500, label="Folder", help_text="Inside /home/jovyan, e.g. projects/churn."
    )
    sweep = forms.CharField(
        required=False,
        label="Grid",
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
        help_text="One parameter a line: name=value1,value2,… One job runs for every combination.",
    )
    metric_goals = forms.CharField(
        required=False,
        label="Best is",
        help_text="e.g. loss=min, accuracy=max. Losses and errors count as lower-is-better by default.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        from portal.accounts.models import Team
        from workspaces.models import Workspace, WorkspaceState

        self.fields["team"].queryset = Team.objects.filter(memberships__user=user).order_by("slug")
        # Every startable image: those without a workspace command are made for jobs.
        self.fields["image"].queryset = Image.objects.visible_to(user).filter(
            status__in=ImageStatus.startable(), current_revision__isnull=False
        )
        self.fields["image"].label_from_instance = _image_label
        self.fields["image"].set_environments(environment_launch_choices(user=user))
        self.fields["profile"].queryset = ResourceProfile.objects.filter(is_active=True)
        self.fields["profile"].label_from_instance = _profile_label
        self.fields["code_workspace"].queryset = Workspace.objects.filter(
            owner=user, state=WorkspaceState.RUNNING
        ).order_by("name")

    def clean_command(self):
        text = self.cleaned_data["command"]
        command = text
        if text.lstrip().startswith("["):
            try:
                command = json.loads(text)
            except ValueError as error:
                raise ValidationError(f"That is not a JSON list of arguments: {error}.") from None
        _checked(spec.command_normalise, command, "command")
        return command

    def clean_parameters(self):
        values = {name: value_parse(value) for _, name, value in lines_parse(self.cleaned_data["parameters"])}
        return _checked(spec.parameters_clean, values, "parameters")

    def clean_env(self):
        values = {name: value for _, name, value in lines_parse(self.cleaned_data["env"])}
        return _checked(spec.env_clean, values, "env")

    def clean_secret_env(self):
        values = {name: value for _, name, value in lines_parse(self.cleaned_data["secret_env"])}
        return _checked(lambda env: spec.env_clean(env, field="secret_env"), values, "secret_env")

    def clean_sweep(self):
        grid = {}
        for number, name, text in lines_parse(self.cleaned_data["sweep"], what="name=value1,value2,…"):
            values = [value_parse(v) for v in text.split(",") if v.strip()]
            if not values:
                raise ValidationError(f"Line {number}: give {name} at least one value.")
            grid[name] = values
        if not grid:
            return None
        sweep = {"grid": grid}
        _checked(spec.sweep_points, sweep, "sweep")
        return sweep

    def clean_metric_goals(self):
        goals = {}
        for item in self.cleaned_data["metric_goals"].replace(",", "\n").splitlines():
            if not item.strip():
                continue
            name, _, goal = item.partition("=")
            if goal.strip() not in ("min", "max") or not name.strip():
                raise ValidationError(f"“{item.strip()}”: write metric=min or metric=max.")
            goals[name.strip()] = goal.strip()
        return goals

    def clean(self):
        data = super().clean()
        source = data.get("code_from")
        if source == CODE_UPLOAD and not data.get("code"):
            self.add_error("code", "Choose a zip or tar file to upload.")
        if source == CODE_WORKSPACE and not data.get("code_workspace"):
            self.add_error("code_workspace", "Choose one of your running workspaces.")
        if set(data.get("env") or {}) & set(data.get("secret_env") or {}):
            self.add_error("secret_env", "A variable is either in the environment or secret, not both.")
        return data

    def job_spec(self, *, code=None) -> JobSpec:
        data = self.cleaned_data
        chosen = data["image"]
        environment = chosen if isinstance(chosen, EnvironmentRevision) else None
        return JobSpec(
            name=data["name"], team=data["team"], image=None if environment else chosen,
            environment_revision=environment, profile=data["profile"],
            command=data["command"], env=dict(data["env"]), secret_env=dict(data["secret_env"]),
            parameters=dict(data["parameters"]), priority=data["priority"], timeout_s=data["timeout_s"],
            max_retries=data["max_retries"], code=code,
        )  # fmt: skip


def _image_label(image: Image) -> str:
    return image.name if image.name == image.slug else f"{image.name} ({image.slug})"


def _profile_label(profile: ResourceProfile) -> str:
    gpus = f", {profile.gpus} GPU{'s' if profile.gpus != 1 else ''}" if profile.gpus else ""
    return f"{profile.name} — {profile.cpus.normalize():f} CPU, {profile.memory_gib.normalize():f} GiB{gpus}"
