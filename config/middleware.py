from django.http import Http404


class HideAdminFromNonStaff:
    """A logged-in person without staff rights gets a 404 from the admin, not its login
    form: annotators should not learn that it is there."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if (
            request.path.startswith("/admin/")
            and user is not None
            and user.is_authenticated
            and not user.is_staff
        ):
            raise Http404("no such page")
        return self.get_response(request)
