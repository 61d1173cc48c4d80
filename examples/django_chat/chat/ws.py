"""The event-driven style beside the view: a roomcast app whose hooks hold no thread per
socket. ``ROOMCAST_APP = "chat.ws:app"`` in settings makes ``runws`` serve it, on the paths no
view in urls.py takes (here ``/live/socket``)."""

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import roomcast

app = roomcast.Server()


@app.on_connect
def hello(conn, request):
    # request went through the project's middleware: the session and the logged-in user.
    user = request.user
    conn.state["name"] = user.get_username() if user.is_authenticated else "anonymous"
    conn.join("lobby")


@app.on("say")
def say(conn, data):
    app.room("lobby").broadcast({"event": "said", "name": conn.state["name"], "text": data["text"]})


def live_page(request):
    return render(request, "live.html")


@csrf_exempt
@require_POST
def notify(request):
    # Any Django code in the same process reaches the sockets: a view, a signal handler, ...
    sent = app.room("lobby").broadcast({"event": "notice", "text": request.POST.get("text", "")})
    return JsonResponse({"sent": sent})
