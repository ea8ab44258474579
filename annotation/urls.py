from django.urls import path

from annotation.views import analytics, annotate, judging

app_name = "annotation"
urlpatterns = [
    path("", annotate.campaign_list, name="campaigns"),
    path("campaigns/new/", annotate.campaign_new, name="campaign_new"),
    path("campaigns/<int:campaign_id>/next/", annotate.campaign_next, name="next"),
    path("campaigns/<int:campaign_id>/undo/", annotate.campaign_undo, name="undo"),
    path("campaigns/<int:campaign_id>/review/", annotate.review_list, name="review"),
    path("items/<int:assignment_id>/", annotate.item_page, name="item"),
    path("items/<int:assignment_id>/submit/", annotate.item_submit, name="submit"),
    path("items/<int:assignment_id>/release/", annotate.item_release, name="release"),
    path("review/<int:item_id>/", annotate.review_item, name="review_item"),
    path("agreement/", analytics.agreement_page, name="agreement"),
    path("analytics/", analytics.analytics_page, name="analytics"),
    path("judge/", judging.judge_launch, name="judge"),
    path("judges/", judging.judge_list, name="judges"),
    path("judges/<int:judge_id>/", judging.judge_detail, name="judge_detail"),
]
