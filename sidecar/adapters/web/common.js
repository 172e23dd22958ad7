// Shared by the status and pair pages. The token lives in sessionStorage only:
// never in a URL, never in a cookie, gone when the tab closes.
const TOKEN_KEY = "wa-sidecar-token";

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// Asks for the token; `refused`: the last one was not accepted, so say so.
function showLogin(onLogin, refused = false) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-refused").hidden = !refused;
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    document.getElementById("token").value = "";
    form.hidden = true;
    onLogin();
  };
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Unauthorized("unauthorized");
  }
  return response;
}

// An age in words: "just now", "40 s ago", "12 min ago", "5 h ago"; older than two days,
// the date and time it happened (`at`, Unix ms).
function ago(ms, at) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.round(ms / 1000);
  if (s < 10) return "just now";
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

// The account's status in words, and whether it needs a person.
const STATUS_WORDS = {
  connecting: ["Connecting", ""],
  qr_pending: ["Waiting for a QR scan", "warn"],
  connected: ["Connected", "ok"],
  disconnected: ["Disconnected, reconnecting", "warn"],
  logged_out: ["Logged out: re-pair it", "bad"],
  replaced: ["Replaced by another client", "bad"],
  banned: ["Banned by WhatsApp", "bad"],
  outdated: ["Client too old for WhatsApp", "bad"],
  stopped: ["Stopped", "muted"],
};

function statusWords(status) {
  const [words, tone] = STATUS_WORDS[status] || [status, ""];
  const span = document.createElement("span");
  span.textContent = words;
  if (tone) span.className = tone;
  return span;
}
