// Shared by the status and pair pages. The token lives in sessionStorage only:
// never in a URL, never in a cookie, gone when the tab closes.
const TOKEN_KEY = "wa-sidecar-token";

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function showLogin(onLogin) {
  const form = document.getElementById("login");
  form.hidden = false;
  form.onsubmit = (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    document.getElementById("token").value = "";
    form.hidden = true;
    onLogin();
  };
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}` },
    cache: "no-store",
  });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Error("unauthorized");
  }
  return response;
}

function age(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}
