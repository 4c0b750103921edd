// streamscore dashboard login: the token goes once, as an Authorization header of a same-origin GET /login, which
// answers an HttpOnly session cookie. It is never put in a URL, in storage or in a cookie the page can read.
"use strict";

const form = document.getElementById("login-form");
const field = document.getElementById("token");
const error = document.getElementById("login-error");

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = field.value;
  error.textContent = "";
  let resp;
  try {
    resp = await fetch("/login", { method: "GET", headers: { Authorization: `Bearer ${token}` },
      credentials: "same-origin", cache: "no-store", redirect: "error" });
  } catch (e) {
    error.textContent = "could not reach the dashboard (or the token has characters a header cannot carry)";
    return;
  }
  if (resp.ok) {
    field.value = "";
    location.replace("/");
    return;
  }
  field.value = "";
  if (resp.status === 429) {
    error.textContent = `too many failed logins; try again in ${resp.headers.get("Retry-After") || "a few"} s`;
  } else if (resp.status === 401) {
    error.textContent = "wrong token";
  } else {
    error.textContent = `login refused (HTTP ${resp.status})`;
  }
});
