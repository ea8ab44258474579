from django.urls import path

from annotation import analytics_views, annotate_views, views

app_name = "annotation"
urlpatterns = [
    path("", annotate_views.campaign_list, name="campaigns"),
    path("campaigns/new/", annotate_views.campaign_new, name="campaign_new"),
    path("campaigns/<int:campaign_id>/next/", annotate_views.campaign_next, name="next"),
    path("campaigns/<int:campaign_id>/undo/", annotate_views.campaign_undo, name="undo"),
    path("campaigns/<int:campaign_id>/review/", annotate_views.review_list, name="review"),
    path("items/<int:assignment_id>/", annotate_views.item_page, name="item"),
    path("items/<int:assignment_id>/submit/", annotate_views.item_submit, name="submit"),
    path("items/<int:assignment_id>/release/", annotate_views.item_release, name="release"),
    path("review/<int:item_id>/", annotate_views.review_item, name="review_item"),
    path("agreement/", views.agreement_page, name="agreement"),
    path("analytics/", analytics_views.analytics_page, name="analytics"),
    path("judge/", views.judge_launch, name="judge"),
]
