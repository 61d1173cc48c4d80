from django.contrib import admin
from django.urls import path

from chat import feeds, views, ws

urlpatterns = [
    path("", views.index),
    path("echo", views.echo),
    path("clock", feeds.clock),
    path("whoami", feeds.whoami),
    path("fail", feeds.fail),
    path("live/", ws.live_page),
    path("live/notify", ws.notify),
    path("admin/", admin.site.urls),
]
