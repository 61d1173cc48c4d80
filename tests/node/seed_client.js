'use strict'
// The chat client of seeds/000 (a Vue page), without Vue: the same frames sent at the same
// moments, the same reactions to what arrives. Two users, alice and bob, enter one room,
// talk, and bob leaves; the script prints one JSON object with what each of them saw.
//
//   node seed_client.js ws://127.0.0.1:PORT [lingerMs] [roomid]
//
// lingerMs: how long both stay in the room before bob leaves (to live through heartbeats).
// Exit code 0 when the scenario completed, 1 (with the partial report) otherwise.

const WebSocket = require('ws')

class SeedClient {
  constructor (url, name, roomid, uid) {
    // The Vue component's data.
    this.url = url
    this.lists = []
    this.ws = {}
    this.name = name
    this.isShow = true
    this.num = 0
    this.roomid = roomid
    this.uid = uid
    // Recorded for the test.
    this.frames = []
    this.pongs = 0
    this.errors = []
    this.closeCode = null
    this.waiters = []
  }

  // The seed's enter(): the name must not be empty, then init() and hide the form.
  enter () {
    if (this.name.trim() === '') {
      throw new Error('用户名不得为空')
    }
    this.init()
    this.isShow = false
  }

  init () {
    this.ws = new WebSocket(this.url)
    this.ws.onopen = () => this.onOpen()
    this.ws.onmessage = (event) => this.onMessage(event)
    this.ws.onclose = (event) => this.onClose(event)
    this.ws.onerror = (event) => this.onError(event)
  }

  onOpen () {
    this.ws.send(JSON.stringify({
      event: 'enter',
      message: this.name,
      roomid: this.roomid,
      uid: this.uid
    }))
  }

  onMessage (event) {
    if (this.isShow) {
      return
    }
    const obj = JSON.parse(event.data)
    this.frames.push(obj)
    switch (obj.event) {
      case 'noauth':
        break
      case 'enter':
        this.lists.push('欢迎:' + obj.message + '加入聊天室!')
        break
      case 'out':
        this.lists.push(obj.name + '已经退出了聊天室!')
        break
      case 'heartbeat':
        this.ws.send(JSON.stringify({ event: 'heartbeat', message: 'pong' }))
        this.pongs++
        break
      default:
        if (obj.name !== this.name) {
          this.lists.push(obj.name + ':' + obj.message)
        }
    }
    this.num = obj.num
    this.wake()
  }

  onClose (event) {
    this.closeCode = event.code
    this.wake()
  }

  onError (event) {
    // The seed reconnects after 1 s; here an error ends the scenario instead.
    this.errors.push(String(event.message || event.error || event.type))
    this.wake()
  }

  // The seed's send(): its own line goes to the list at once, the server echoes it too.
  send (message) {
    this.lists.push(this.name + ':' + message)
    this.ws.send(JSON.stringify({ event: 'message', message, name: this.name }))
  }

  // For the scenario: resolve when `pred` holds after some frame arrives.
  until (what, pred) {
    return new Promise((resolve) => {
      const check = () => {
        if (pred()) {
          resolve()
          return true
        }
        return false
      }
      if (!check()) {
        this.waiters.push({ what, check })
      }
    })
  }

  wake () {
    this.waiters = this.waiters.filter((w) => !w.check())
  }

  saw (event, pred = () => true) {
    return this.frames.some((f) => f.event === event && pred(f))
  }

  report () {
    return {
      name: this.name,
      num: this.num,
      lists: this.lists,
      frames: this.frames,
      pongs: this.pongs,
      errors: this.errors,
      closeCode: this.closeCode,
      waitingFor: this.waiters.map((w) => w.what)
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function scenario (alice, bob, lingerMs) {
  alice.enter()
  await alice.until('alice enters', () => alice.saw('enter', (f) => f.name === 'alice'))
  bob.enter()
  const bobEntered = (f) => f.name === 'bob'
  await bob.until('bob enters', () => bob.saw('enter', bobEntered))
  await alice.until('alice sees bob enter', () => alice.saw('enter', bobEntered))

  alice.send('hello from alice')
  await bob.until('bob hears alice', () => bob.saw('message', (f) => f.name === 'alice'))
  bob.send('hi alice')
  await alice.until('alice hears bob', () => alice.saw('message', (f) => f.name === 'bob'))
  await bob.until('bob hears himself', () => bob.saw('message', (f) => f.name === 'bob'))

  if (lingerMs > 0) {
    await sleep(lingerMs)
  }
  bob.ws.close()
  await alice.until('alice sees bob out', () => alice.saw('out'))
  await bob.until('bob closed', () => bob.closeCode !== null)
  alice.ws.close()
  await alice.until('alice closed', () => alice.closeCode !== null)
}

async function main () {
  const url = process.argv[2]
  if (!url) {
    console.error('usage: node seed_client.js ws://HOST:PORT [lingerMs] [roomid]')
    process.exit(2)
  }
  const lingerMs = Number(process.argv[3] || 0)
  const roomid = process.argv[4] || 'seed-room'
  // The Vue form binds uid from a text input: strings.
  const alice = new SeedClient(url, 'alice', roomid, '1')
  const bob = new SeedClient(url, 'bob', roomid, '2')
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('scenario timed out')), 15000)
  })
  let error = null
  try {
    await Promise.race([scenario(alice, bob, lingerMs), timeout])
  } catch (err) {
    error = String(err && err.message ? err.message : err)
  }
  clearTimeout(timer)
  const report = { ok: error === null, error, alice: alice.report(), bob: bob.report() }
  process.stdout.write(JSON.stringify(report) + '\n')
  for (const client of [alice, bob]) {
    if (client.ws && typeof client.ws.terminate === 'function') {
      client.ws.terminate()
    }
  }
  process.exitCode = error === null ? 0 : 1
}

main()
