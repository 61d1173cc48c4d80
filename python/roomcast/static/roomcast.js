/**
 * roomcast.js: a small browser client for roomcast's chat preset (docs: PROTOCOL.md).
 *
 * A plain ES module with no dependencies and no build step. Every chat preset serves it at
 * /roomcast.js, so a page on the same server imports it directly:
 *
 *   import RoomcastChat from "/roomcast.js";
 *
 *   const chat = new RoomcastChat({
 *     url: "wss://chat.example.com/",  // default: this page's host, path "/", ws: or wss:
 *     token: jwt,                      // optional: sent as ?token=... on every (re)connect
 *     heartbeatMs: 30000,              // the server's heartbeat interval (its setting, in ms)
 *   });
 *   chat.on("enter", (f) => show(`welcome ${f.message}`, f.num));
 *   chat.on("message", (f) => show(`${f.name}: ${f.message}`, f.num));
 *   chat.on("out", (f) => show(`${f.name} left`, f.num));
 *   chat.on("state", (state) => badge(state));  // see `state` below
 *
 *   chat.enter({ name: "ann", roomid: "lobby", uid: "u-1" });  // connects if needed
 *   chat.send("hello");         // a chat line; the server echoes it back to you too
 *   chat.sendEvent({ event: "typing" });  // any other event is broadcast to the room
 *   chat.ping();                // text "ping"; the server's text "pong" fires "pong"
 *   chat.auth(newJwt);          // (re)authenticate; also used on every later reconnect
 *   chat.leave();               // leave the room on purpose: nothing is kept for you any more
 *   chat.close();               // stop for good; connect() or enter() starts again
 *
 * What it takes care of:
 * - Heartbeat: the server's {"event":"heartbeat","message":"ping"} is answered with
 *   {"event":"heartbeat","message":"pong"}, or the server would drop the connection.
 * - Dead server: a server that sends no frame at all for heartbeatMs + heartbeatMarginMs is
 *   taken as gone (its heartbeat should have arrived by then); the socket is abandoned and a
 *   new one dialled. TCP alone can take minutes to notice a vanished peer.
 * - Reconnect: after any close or error, with exponential backoff and full jitter (each wait is
 *   random in [0, ceiling); the ceiling starts at minDelayMs and doubles per failed try up to
 *   maxDelayMs), so a restarted server is not hit by every client in the same instant. A
 *   connection that stayed up stableMs resets the ceiling.
 * - Re-entry: on every new connection the last enter is sent again, so the user is back in
 *   the room (and gets the messages kept while away), then frames queued while disconnected.
 *
 * Events for on(name, fn): "open" {reconnect}, "close" {code, reason, reconnectInMs},
 * "state" (the new state), "pong", "text" (a non-JSON frame), "*" (every JSON frame), and
 * every event the server sends by its name: "enter", "message", "out", "noauth",
 * "heartbeat", "error" (server error frames, and {socket: true} for socket errors), or any
 * custom event broadcast in the room. Handlers get the decoded frame.
 *
 * `state` is "idle" (not started), "connecting" (first dial), "open", "reconnecting"
 * (dropped: waiting or dialling again) or "closed" (after close()); `connected` is
 * state === "open".
 */

const DEFAULTS = {
  url: null, // null: this page's host, path "/" (where the chat preset listens)
  token: null, // a JWT, when the server has auth on
  heartbeatMs: 30000, // the server's heartbeat interval: the longest a live server is silent
  heartbeatMarginMs: 1000, // slack for a late heartbeat before the server counts as dead
  minDelayMs: 500, // the first retry's ceiling
  maxDelayMs: 10000, // the highest ceiling: an outage is retried at least this often
  stableMs: 5000, // a connection that stayed up this long resets the backoff
  maxQueued: 100, // frames kept while disconnected; beyond it the oldest is dropped
};

const PONG = JSON.stringify({ event: "heartbeat", message: "pong" });
// A code of the application range: our side gave up on a silent server.
const SILENT_SERVER = 4000;

export class RoomcastChat {
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.token = this.options.token || null;
    this.state = "idle";
    this._listeners = new Map();
    this._socket = null;
    this._enterFrame = null; // the last enter, re-sent on every new connection
    this._outbox = []; // frames sent while disconnected, flushed after the re-enter
    this._attempt = 0; // failed tries since the last stable connection
    this._openedAt = 0;
    this._everOpened = false;
    this._retryTimer = null;
    this._watchdog = null;
  }

  get connected() {
    return this.state === "open";
  }

  /** The name, room and uid of the last enter (null when in no room). */
  get room() {
    const f = this._enterFrame;
    return f ? { name: f.message, roomid: f.roomid, uid: f.uid } : null;
  }

  /** Subscribe; returns a function that unsubscribes. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  /** Start connecting (enter() does it for you). No-op when already started. */
  connect() {
    if (this.state === "idle" || this.state === "closed") {
      this._everOpened = false;
      this._attempt = 0;
      this._dial();
    }
  }

  /** Enter a room; remembered, and re-sent after every reconnect. */
  enter({ name, roomid, uid }) {
    this._enterFrame = { event: "enter", message: name, roomid, uid };
    if (this.connected) this._write(this._enterFrame);
    else this.connect(); // sent by the open handler
  }

  /** A chat line to the entered room. True if sent now, false if queued for the reconnect. */
  send(text) {
    return this.sendEvent({ event: "message", message: String(text), name: this.room?.name });
  }

  /** Any frame (an object with an `event`). True if sent now, false if queued. */
  sendEvent(frame) {
    if (!frame || typeof frame.event !== "string") {
      throw new TypeError("sendEvent needs an object with a string `event`");
    }
    if (this.state === "idle" || this.state === "closed") {
      throw new Error(`roomcast: not connected (state ${this.state}); call enter() first`);
    }
    if (this.connected) {
      this._write(frame);
      return true;
    }
    this._outbox.push(frame);
    if (this._outbox.length > this.options.maxQueued) this._outbox.shift();
    return false;
  }

  /** Leave the room on purpose. Offline, this only forgets it: the server keeps the
   *  membership until its retention ends. */
  leave() {
    this._enterFrame = null;
    this._outbox = [];
    if (!this.connected) return false;
    this._write({ event: "leave" });
    return true;
  }

  /** Authenticate with a (new) token; it is also used on every later connection. */
  auth(token) {
    this.token = token || null;
    if (!this.connected || !this.token) return false;
    this._write({ event: "auth", message: this.token });
    return true;
  }

  /** Send the text "ping"; the server answers "pong" (the "pong" event). */
  ping() {
    if (!this.connected) return false;
    this._socket.send("ping");
    return true;
  }

  /** Stop for good: no reconnect. The room is remembered, so connect() resumes it. */
  close(reason = "client closed") {
    clearTimeout(this._retryTimer);
    clearTimeout(this._watchdog);
    const socket = this._socket;
    this._socket = null;
    this._outbox = [];
    if (socket) {
      detach(socket);
      socket.close(1000, reason);
    }
    if (this.state === "closed") return;
    this._setState("closed");
    this._emit("close", { code: 1000, reason, reconnectInMs: null });
  }

  // -- internals -------------------------------------------------------------------------

  _url() {
    let url = this.options.url;
    if (!url) {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      url = `${scheme}//${location.host}/`;
    }
    if (!this.token) return url;
    const u = new URL(url, location.href);
    u.searchParams.set("token", this.token);
    return u.href;
  }

  _dial() {
    this._setState(this._everOpened || this._attempt > 0 ? "reconnecting" : "connecting");
    const socket = new WebSocket(this._url());
    this._socket = socket;
    // The watchdog also bounds the handshake: a dial that hangs is given up like a silence.
    this._armWatchdog();
    socket.onopen = () => this._opened();
    socket.onmessage = (ev) => {
      this._armWatchdog();
      this._receive(ev.data);
    };
    // An error event carries no detail and is always followed by close, which reconnects.
    socket.onerror = () => {
      this._emit("error", { event: "error", message: "WebSocket error", socket: true });
    };
    socket.onclose = (ev) => this._dropped(ev.code, ev.reason);
  }

  _opened() {
    this._openedAt = Date.now();
    this._setState("open");
    this._armWatchdog();
    if (this._enterFrame) this._write(this._enterFrame);
    for (const frame of this._outbox.splice(0)) this._write(frame);
    this._emit("open", { reconnect: this._everOpened });
    this._everOpened = true;
  }

  _dropped(code, reason) {
    clearTimeout(this._watchdog);
    if (this._socket) detach(this._socket);
    this._socket = null;
    if (this._openedAt && Date.now() - this._openedAt >= this.options.stableMs) this._attempt = 0;
    this._openedAt = 0;
    const { minDelayMs, maxDelayMs } = this.options;
    const ceiling = Math.min(maxDelayMs, minDelayMs * 2 ** this._attempt);
    const delay = Math.round(Math.random() * ceiling);
    this._attempt += 1;
    this._setState("reconnecting");
    this._emit("close", { code, reason, reconnectInMs: delay });
    this._retryTimer = setTimeout(() => this._dial(), delay);
  }

  _armWatchdog() {
    clearTimeout(this._watchdog);
    const limit = this.options.heartbeatMs + this.options.heartbeatMarginMs;
    this._watchdog = setTimeout(() => {
      // Do not wait for the close handshake: a dead server never answers it.
      const socket = this._socket;
      detach(socket);
      socket.close(SILENT_SERVER, "no frame from the server");
      this._dropped(SILENT_SERVER, `no frame from the server for ${limit} ms`);
    }, limit);
  }

  _receive(data) {
    if (typeof data !== "string") return; // the chat protocol is text only
    if (data === "pong") return this._emit("pong");
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return this._emit("text", data);
    }
    if (!frame || typeof frame.event !== "string") return this._emit("text", data);
    if (frame.event === "heartbeat" && frame.message === "ping") this._socket.send(PONG);
    this._emit(frame.event, frame);
    this._emit("*", frame);
  }

  _write(frame) {
    this._socket.send(JSON.stringify(frame));
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state);
  }

  _emit(event, payload) {
    for (const fn of this._listeners.get(event) ?? []) {
      // One failing handler must not break the client or the other handlers: report it
      // asynchronously, where the console and window.onerror see it.
      try {
        fn(payload);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

function detach(socket) {
  socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
}

export default RoomcastChat;
