"""roomcast for Django: dwebsocket's API on a working server, and Django pages + WebSockets on
one port (``python manage.py runws``).

Port a dwebsocket project by changing its imports only::

    from roomcast.django.decorators import accept_websocket, require_websocket
    from roomcast.django.middleware import WebSocketMiddleware

Add ``"roomcast.django"`` to ``INSTALLED_APPS`` and run ``python manage.py runws``. See
docs/django.md for the migration guide and the event-driven style (``ROOMCAST_APP``).
Importing ``roomcast`` alone never imports Django.
"""

from .decorators import accept_websocket, require_websocket

__all__ = ["accept_websocket", "require_websocket"]
