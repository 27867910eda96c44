"""The image-or-environment choice the workspace and job forms share."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import ModelChoiceIterator

from portal.catalog.models import EnvironmentRevision


class _LaunchIterator(ModelChoiceIterator):
    """Environments first (a group), then the catalog's images."""

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        images = [self.choice(image) for image in self.queryset]
        if not self.field.environments:
            yield from images
            return
        yield ("Environments", [(ref, self.field.environment_label(r)) for ref, r in self.field.environments.items()])
        yield ("Images", images)

    def __len__(self):
        return sum(1 for _ in self)

    def __bool__(self):
        return bool(self.field.environments) or super().__bool__()


class ImageOrEnvironmentField(forms.ModelChoiceField):
    """An image (by slug) or an environment revision (by `<slug>@<number>`): cleaned to an
    Image or an EnvironmentRevision."""

    iterator = _LaunchIterator

    def __init__(self, *args, **kwargs):
        self.environments: dict[str, EnvironmentRevision] = {}
        self.default: EnvironmentRevision | None = None
        super().__init__(*args, **kwargs)

    def set_environments(self, revisions, default: EnvironmentRevision | None = None) -> None:
        self.environments = {r.ref: r for r in revisions}
        self.default = default
        self.widget.choices = self.choices

    def environment_label(self, revision: EnvironmentRevision) -> str:
        mark = " — team default" if self.default is not None and self.default.pk == revision.pk else ""
        return f"{revision.environment.name} ({revision.ref}){mark}"

    def prepare_value(self, value):
        if isinstance(value, EnvironmentRevision):
            return value.ref
        return super().prepare_value(value)

    def to_python(self, value):
        if isinstance(value, str) and "@" in value:
            if value not in self.environments:
                raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
            return self.environments[value]
        return super().to_python(value)
