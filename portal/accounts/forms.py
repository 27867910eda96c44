"""Forms for the settings and team pages: the edge where people's input is checked."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.utils import timezone

from portal.accounts.models import Role, User

TOKEN_LIFETIMES = [
    ("30", "30 days"),
    ("7", "7 days"),
    ("90", "90 days"),
    ("365", "1 year"),
    ("never", "No expiry"),
]


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “laptop CLI” or “CI pipeline”.")
    lifetime = forms.ChoiceField(choices=TOKEN_LIFETIMES, label="Expires after")

    def expires_at(self):
        lifetime = self.cleaned_data["lifetime"]
        return None if lifetime == "never" else timezone.now() + timedelta(days=int(lifetime))


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150, label="Username")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def clean_username(self) -> User:
        username = self.cleaned_data["username"].strip()
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no active user called “{username}”.")
        return user


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
