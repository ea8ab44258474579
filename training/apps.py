from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Checkpoints, training and evaluation"

    def ready(self) -> None:
        from config.roles import roles_sync

        # Connected to the last project app: by its post_migrate every model's permissions
        # exist, so the role groups can be synced in one place.
        post_migrate.connect(roles_sync, sender=self, dispatch_uid="roles_sync")
