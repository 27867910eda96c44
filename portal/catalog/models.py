"""The curated image catalog: what may be run, each version pinned by digest."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from portal.accounts.models import Role, Team, slug_validator


class ImageStatus(models.TextChoices):
    DRAFT = "draft", "Draft"  # no usable revision yet (never built, or its pull cannot happen here)
    BUILDING = "building", "Building"  # first build running; nothing usable yet
    READY = "ready", "Ready"  # current_revision is usable (a rebuild may be running or have failed)
    FAILED = "failed", "Failed"  # the only builds so far failed
    DEPRECATED = "deprecated", "Deprecated"  # no new workloads; running ones and reruns continue

    @classmethod
    def startable(cls) -> tuple[str, ...]:
        return (cls.READY,)


class SourceType(models.TextChoices):
    BUILD = "build", "Build from a spec"
    PULL = "pull", "Pull a reference"


class ImageQuerySet(models.QuerySet):
    def catalog(self) -> ImageQuerySet:
        """Catalog entries proper: not the images that hold an environment's builds (those are
        seen and launched only through their environment, whose visibility rules apply)."""
        return self.filter(environment__isnull=True)

    def visible_to(self, user) -> ImageQuerySet:
        """Images a person may see: public ones and those listed for one of their teams."""
        if user.is_staff:
            return self.catalog()
        return self.catalog().filter(Q(all_teams=True) | Q(teams__memberships__user=user)).distinct()


class Image(models.Model):
    """A catalog entry. Its spec lives in revisions; `current_revision` is the one in use."""

    slug = models.SlugField(max_length=40, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    framework = models.CharField(max_length=40, blank=True, help_text="e.g. PyTorch, TensorFlow, SciPy")
    framework_version = models.CharField(max_length=20, blank=True)
    python_version = models.CharField(max_length=10, blank=True)
    cuda_version = models.CharField(max_length=10, blank=True, help_text="Empty for CPU-only images.")
    gpu_capable = models.BooleanField(default=False)
    default_command = models.JSONField(default=list, blank=True, help_text="Workspace command, as a list.")
    status = models.CharField(max_length=12, choices=ImageStatus.choices, default=ImageStatus.DRAFT)
    all_teams = models.BooleanField(default=True, help_text="Visible to every team; else only to `teams`.")
    teams = models.ManyToManyField(Team, blank=True, related_name="images")
    current_revision = models.ForeignKey(
        "ImageRevision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    successor = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    deprecation_message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def digest(self) -> str:
        return self.current_revision.digest if self.current_revision else ""


class ImageRevision(models.Model):
    """One version of an image's spec, and the digest it built (or pulled) to.

    Revisions are never edited once made: a change to the spec makes a new one, so every
    workload keeps the exact revision and digest it started with.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Not built"
        BUILDING = "building", "Building"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    source_type = models.CharField(max_length=8, choices=SourceType.choices)
    pull_ref = models.CharField(max_length=300, blank=True)
    base_image = models.CharField(max_length=300, blank=True)
    apt_packages = models.JSONField(default=list, blank=True)
    pip_requirements = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    digest = models.CharField(max_length=100, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    packages = models.JSONField(default=list, blank=True, help_text="Python packages inside: [name, version].")
    pip_lock = models.JSONField(
        default=list, blank=True, help_text="What pip installed in the build: `name==version --hash=sha256:...` lines."
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    built_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["image", "-number"]
        constraints = [models.UniqueConstraint(fields=["image", "number"], name="revision_number_unique")]

    def __str__(self) -> str:
        return f"{self.image.slug} r{self.number}"

    @property
    def tag(self) -> str:
        return f"dockyard/{self.image.slug}:r{self.number}"

    def spec_summary(self) -> dict:
        if self.source_type == SourceType.PULL:
            return {"pull": self.pull_ref}
        return {"base": self.base_image, "apt": self.apt_packages, "pip": self.pip_requirements}


class ImageBuild(models.Model):
    """One attempt to build or pull a revision, with its progress and whole log kept."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"  # set by image_build; a `builds` worker picks it up
        RUNNING = "running", "Running"  # claimed by a worker
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

        @classmethod
        def active(cls) -> tuple[str, ...]:
            return (cls.QUEUED, cls.RUNNING)

    revision = models.ForeignKey(ImageRevision, on_delete=models.CASCADE, related_name="builds")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0)
    step = models.CharField(max_length=200, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One build at a time per revision, however many people click "Build".
            models.UniqueConstraint(
                fields=["revision"], condition=Q(status__in=["queued", "running"]), name="one_active_build_per_revision"
            )
        ]

    def __str__(self) -> str:
        return f"build {self.pk} of {self.revision}"

    @property
    def is_active(self) -> bool:
        return self.status in self.Status.active()


# --- Environments: a team's versioned recipe on top of a catalog image ---------------------------


class EnvironmentQuerySet(models.QuerySet):
    def visible_to(self, user) -> EnvironmentQuerySet:
        """Shared environments of a person's teams, and their own private ones (staff: all).
        Other teams never see a team's environments."""
        if user.is_staff:
            return self.all()
        mine = Q(team__memberships__user=user) & (Q(shared=True) | Q(created_by=user))
        return self.filter(mine).distinct()

    def manageable_by(self, user) -> EnvironmentQuerySet:
        """Those a person may change (revise, build, share): their own, and as team admin the
        team's shared ones (staff: all)."""
        if user.is_staff:
            return self.all()
        admin = Q(team__memberships__user=user, team__memberships__role=Role.TEAM_ADMIN, shared=True)
        own = Q(team__memberships__user=user, created_by=user)
        return self.filter(admin | own).distinct()


class Environment(models.Model):
    """A team's named, versioned recipe: a catalog image as base plus pip and apt packages,
    env vars (secret ones sealed), a default profile and a start-up script.

    Its builds go through the catalog's build machinery: `image` is a catalog entry of its own,
    hidden from the catalog (`ImageQuerySet.catalog`), whose revisions are this environment's
    builds. Private environments are seen by their creator only; shared ones by the team.
    """

    slug = models.SlugField(max_length=36, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="environments")
    shared = models.BooleanField(default=True, help_text="Visible to the team's members; else only to its creator.")
    image = models.OneToOneField(Image, on_delete=models.PROTECT, related_name="environment")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class EnvironmentRevision(models.Model):
    """One version of an environment's recipe, built as one catalog image revision.

    Never edited once made: a change, a rebuild from the lock, a workspace saved as an
    environment or an import each make a new revision. `from_lock` set means the build
    installs exactly those locked files instead of resolving `pip_requirements`.
    """

    class Origin(models.TextChoices):
        RECIPE = "recipe", "Recipe"  # created or revised by a person
        LOCK = "lock", "Rebuilt from a lock"  # a rebuild of an earlier revision's lock
        WORKSPACE = "workspace", "Saved from a workspace"  # packages captured from a running workspace
        IMPORT = "import", "Imported"  # from an exported YAML file

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    image_revision = models.OneToOneField(ImageRevision, on_delete=models.PROTECT, related_name="environment_revision")
    base_revision = models.ForeignKey(ImageRevision, on_delete=models.PROTECT, related_name="+")
    base_digest = models.CharField(max_length=100, help_text="The exact base image it builds on.")
    pip_requirements = models.JSONField(default=list, blank=True)
    apt_packages = models.JSONField(default=list, blank=True)
    from_lock = models.JSONField(default=list, blank=True, help_text="Lock lines installed with --require-hashes.")
    env = models.JSONField(default=dict, blank=True)
    secret_env = models.TextField(blank=True, help_text="Encrypted (portal.core.secrets).")
    secret_env_names = models.JSONField(default=list, blank=True)
    profile = models.ForeignKey(
        "quotas.ResourceProfile", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    startup_script = models.TextField(blank=True)
    origin = models.CharField(max_length=10, choices=Origin.choices, default=Origin.RECIPE)
    note = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["environment", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["environment", "number"], name="environment_revision_number_unique")
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def ref(self) -> str:
        """How people and the API name it: `<slug>@<number>`."""
        return f"{self.environment.slug}@{self.number}"

    @property
    def status(self) -> str:
        return self.image_revision.status

    @property
    def digest(self) -> str:
        return self.image_revision.digest

    @property
    def lock(self) -> list[str]:
        return self.image_revision.pip_lock

    @property
    def is_ready(self) -> bool:
        return self.image_revision.status == ImageRevision.Status.READY


class TeamEnvironmentDefault(models.Model):
    """The environment revision a team's admins chose as what new work starts from."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="environment_default")
    revision = models.ForeignKey(EnvironmentRevision, on_delete=models.PROTECT, related_name="+")
    set_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    set_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.team}: {self.revision}"
