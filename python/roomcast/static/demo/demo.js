// The chat demo page: the seed's Vue chat, as a few lines of DOM code on roomcast.js.
import RoomcastChat from "/roomcast.js";

const $ = (id) => document.getElementById(id);

// The demo server fills these meta tags; a literal placeholder means the page was served
// some other way, so the setting is absent.
function setting(name) {
  const value = document.querySelector(`meta[name="${name}"]`)?.content ?? "";
  return value.startsWith("{{") ? "" : value;
}

const chat = new RoomcastChat({
  token: setting("roomcast-token") || null,
  heartbeatMs: Number(setting("roomcast-heartbeat-ms")) || 30000,
});
let me = null; // {name, roomid, uid} while in a room

// -- remembered identity: one uid per name, so a reload or a return is the same user ------

const store = {
  get(key) {
    try {
      return localStorage.getItem(`roomcast-demo:${key}`);
    } catch {
      return null; // storage disabled: nothing is remembered
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`roomcast-demo:${key}`, value);
    } catch {
      // storage disabled or full: the demo still works, it just forgets
    }
  },
};

function newUid() {
  // getRandomValues works on plain http too (randomUUID needs a secure context).
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "u-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function showRememberedUid() {
  $("uid").value = store.get(`uid:${$("name").value.trim()}`) ?? "";
}

// -- rendering --------------------------------------------------------------------------

function addLine(kind, text, who) {
  const list = $("messages");
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const li = document.createElement("li");
  // A line without a sender is a notice (welcome, left, errors), styled as such.
  li.className = who === undefined ? `line notice ${kind}` : `line ${kind}`;
  li.dataset.kind = kind;
  if (who !== undefined) {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    li.append(name);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  li.append(body);
  list.append(li);
  if (nearBottom) list.scrollTop = list.scrollHeight; // follow, unless reading back
}

const STATUS_TEXT = {
  idle: "not connected",
  connecting: "connecting…",
  open: "connected",
  reconnecting: "reconnecting…",
  closed: "offline",
};

chat.on("state", (state) => {
  $("status").dataset.state = state;
  $("status").textContent = STATUS_TEXT[state] ?? state;
});

// Every frame that carries `num` (enter, message, out, heartbeat) updates the count.
chat.on("*", (frame) => {
  if (me && typeof frame.num === "number") $("count").textContent = frame.num;
});
// Who is online is unknown while disconnected; the re-enter's echo brings the count back.
chat.on("close", () => {
  $("count").textContent = "–";
});
chat.on("enter", (f) => me && addLine("enter", `welcome ${f.message}`));
chat.on("out", (f) => me && addLine("out", `${f.name} left`));
// The server echoes our own lines back with our name: they are shown from the echo only,
// so each appears once, in the server's order, and only once the server has taken it.
chat.on("message", (f) => me && addLine(f.name === me.name ? "own" : "other", f.message, f.name));
chat.on("noauth", (f) => addLine("error", `not authorised: ${f.message}`));
chat.on("error", (f) => f.socket || addLine("error", `server: ${f.message}`));

// -- forms ------------------------------------------------------------------------------

$("name").addEventListener("input", showRememberedUid);

$("enter-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("name").value.trim();
  const roomid = $("roomid").value.trim();
  if (!name || !roomid) return;
  const uid = $("uid").value.trim() || store.get(`uid:${name}`) || newUid();
  store.set(`uid:${name}`, uid);
  $("uid").value = uid;
  store.set("last", JSON.stringify({ name, roomid }));
  me = { name, roomid, uid };
  $("messages").replaceChildren();
  $("count").textContent = "0";
  $("room-name").textContent = roomid;
  $("enter-form").hidden = true;
  $("room").hidden = false;
  chat.enter(me);
  $("text").focus();
});

$("send-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value;
  if (!text.trim()) return;
  chat.send(text); // while reconnecting it is queued and sent after the re-enter
  $("text").value = "";
});

$("leave").addEventListener("click", () => {
  chat.leave();
  me = null;
  $("room").hidden = true;
  $("enter-form").hidden = false;
});

// Prefill the form with the last room entered in this browser.
try {
  const last = JSON.parse(store.get("last") ?? "null");
  if (last) {
    $("name").value = last.name;
    $("roomid").value = last.roomid;
  }
} catch {
  // a damaged entry: start blank
}
showRememberedUid();
