"""Roles as Django groups: annotator, curator, staff. Synced after every migrate."""

from __future__ import annotations

from typing import Any

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"
ALL = (VIEW, ADD, CHANGE, DELETE)

# group -> {"app_label.model": actions}
ROLE_PERMISSIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "annotator": {
        "annotation.rating": (VIEW, ADD, CHANGE),
        "annotation.pairpick": (VIEW, ADD, CHANGE),
    },
    "curator": {
        "datasets_app.source": ALL,
        "datasets_app.prompt": ALL,
        "datasets_app.datasetversion": (VIEW, ADD),
        "annotation.completion": (VIEW,),
        "annotation.rating": ALL,
        "annotation.pairpick": ALL,
        "annotation.judgeconfig": (VIEW,),
        "workers.job": (VIEW,),
    },
    "staff": {
        "datasets_app.source": ALL,
        "datasets_app.prompt": ALL,
        "datasets_app.datasetversion": ALL,
        "annotation.completion": ALL,
        "annotation.rating": ALL,
        "annotation.pairpick": ALL,
        "annotation.judgeconfig": ALL,
        "training.checkpoint": ALL,
        "training.trainingjob": ALL,
        "training.evaluationrun": ALL,
        "workers.job": ALL,
    },
}


def roles_sync(**_: Any) -> None:
    """Create the groups and give them exactly the permissions listed above."""
    from django.contrib.auth.models import Group, Permission

    for group_name, models in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        wanted = []
        for label, actions in models.items():
            app_label, model = label.split(".")
            codenames = [f"{action}_{model}" for action in actions]
            perms = list(
                Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
            )
            if len(perms) != len(codenames):
                raise RuntimeError(f"permissions missing for {label}: run migrate first")
            wanted.extend(perms)
        group.permissions.set(wanted)
