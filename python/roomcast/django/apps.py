"""The Django app: add ``"roomcast.django"`` to ``INSTALLED_APPS`` for ``manage.py runws``."""

from django.apps import AppConfig


class RoomcastConfig(AppConfig):
    name = "roomcast.django"
    label = "roomcast"
    verbose_name = "roomcast WebSockets"
