from config.access import access_is_curator, access_is_staff


def roles(request) -> dict[str, bool]:
    """Which parts of the navigation this user may see."""
    return {
        "can_curate": access_is_curator(request.user),
        "can_operate": access_is_staff(request.user),
    }
