// Forward a Baileys socket's events to wa-sidecar, which measures the session
// (real/protocol traffic, the deaf-session verdict, alerts) without touching it.
// docs/ingest.md explains each step; the sidecar's account needs `source: ingest`.
//
// Use, where the socket is made (after makeWASocket, beside your own handlers):
//
//   const { forwardToSidecar } = require('./baileys-forwarder')
//   sock.__sidecarOff?.()   // a socket wired again must not forward twice
//   sock.__sidecarOff = forwardToSidecar(sock, {
//     url: 'http://127.0.0.1:9464/api/ingest/baileys/sales',
//     token: process.env.WA_SIDECAR_TOKEN,
//   })
//
// It never delays the socket: each event is posted on its own, at most
// `timeoutMs` long, and a failure is logged once a minute, never thrown.
// Node 18 or later (global fetch).

'use strict'

// What the sidecar measures. Never add 'creds.update': it holds the session's keys.
const EVENTS = ['messages.upsert', 'messages.update', 'message-receipt.update', 'connection.update']
const BATCH = 1000

function forwardToSidecar (sock, { url, token, timeoutMs = 5000, log = console }) {
  let lastWarning = 0
  const post = async (event, data) => {
    try {
      const reply = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
        body: JSON.stringify({ event, data }),
        signal: AbortSignal.timeout(timeoutMs)
      })
      if (!reply.ok) throw new Error(`HTTP ${reply.status}`)
    } catch (error) {
      if (Date.now() - lastWarning > 60000) {
        lastWarning = Date.now()
        log.warn(`wa-sidecar forwarder: ${event} not delivered (${error.message})`)
      }
    }
  }
  return sock.ev.process((events) => {
    for (const name of EVENTS) {
      if (!events[name]) continue
      let data = events[name]
      if (name === 'connection.update') {
        // a Boom error does not survive JSON.stringify: keep its status code
        const last = data.lastDisconnect
        data = {
          connection: data.connection,
          qr: data.qr,
          receivedPendingNotifications: data.receivedPendingNotifications,
          lastDisconnect: last && { statusCode: last.error?.output?.statusCode, date: last.date }
        }
      }
      if (name === 'messages.upsert' && data.messages.length > BATCH) {
        // the sidecar takes at most 5,000 events a request: a long history goes in parts
        for (let i = 0; i < data.messages.length; i += BATCH) {
          post(name, { ...data, messages: data.messages.slice(i, i + BATCH) })
        }
        continue
      }
      post(name, data)
    }
  })
}

module.exports = { forwardToSidecar }
