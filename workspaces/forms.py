"""The new-workspace form: what fits is shown before anything is created."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django import forms

from portal.catalog.environments.fields import ImageOrEnvironmentField
from portal.catalog.environments.selectors import environment_launch_choices, team_defaults
from portal.catalog.models import EnvironmentRevision, Image, ImageStatus
from portal.quotas.models import ResourceProfile
from portal.quotas.services.admission import admit_preview
from portal.quotas.values import AdmissionRequest, Resources, WorkloadRef


@dataclass(frozen=True)
class ProfileChoice:
    profile: ResourceProfile
    refusal: str  # empty when it fits now


def profile_choices(*, user, team) -> list[ProfileChoice]:
    """Every offered profile with whether it fits the person's and team's remaining quota now."""
    choices = []
    for profile in ResourceProfile.objects.filter(is_active=True):
        request = AdmissionRequest(
            workload=WorkloadRef(kind="workspace", uid=uuid.uuid4()),
            team=team,
            user=user,
            resources=Resources.of_profile(profile),
            profile=profile,
        )
        refusal = admit_preview(request=request) if team else None
        choices.append(ProfileChoice(profile=profile, refusal=refusal.message if refusal else ""))
    return choices


class WorkspaceForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Lowercase letters, digits and dashes, e.g. “churn-model”.")
    team = forms.ModelChoiceField(queryset=None, empty_label=None)
    image = ImageOrEnvironmentField(
        queryset=None, empty_label=None, to_field_name="slug", label="Image or environment",
        help_text="A catalog image, or a built revision of one of your team's environments.",
    )  # fmt: skip
    profile = forms.ModelChoiceField(
        queryset=ResourceProfile.objects.filter(is_active=True), to_field_name="slug", widget=forms.RadioSelect
    )
    wait = forms.BooleanField(
        required=False, label="Wait for capacity", help_text="If it does not fit now, queue it and start it by itself."
    )

    def __init__(self, *args, user, team=None, **kwargs):
        super().__init__(*args, **kwargs)
        from portal.accounts.models import Team

        self.fields["team"].queryset = Team.objects.filter(memberships__user=user)
        # Images with a workspace command start JupyterLab; the others are for jobs.
        self.fields["image"].queryset = (
            Image.objects.visible_to(user).filter(status=ImageStatus.READY).exclude(default_command=[])
        )
        self.fields["image"].label_from_instance = lambda image: image.name
        default = team_defaults(teams=[team]).get(team.pk) if team is not None else None
        self.fields["image"].set_environments(environment_launch_choices(user=user, workspace=True), default=default)
        if default is not None and not self.is_bound and "image" not in self.initial:
            self.initial["image"] = default.ref


def launch_choice(chosen) -> dict:
    """The workspace_create arguments for what the form's image field chose."""
    if isinstance(chosen, EnvironmentRevision):
        return {"image": None, "environment_revision": chosen}
    return {"image": chosen}
