from django.urls import path

from sampleproject.shop import views

urlpatterns = [
    path("items/", views.items, name="items"),
    path("slow/", views.slow, name="slow"),
    path("hold/", views.hold, name="hold"),
    path("hello/", views.hello, name="hello"),
    path("sleep/", views.sleep, name="sleep"),
    path("spawn-query/", views.spawn_query, name="spawn-query"),
]
