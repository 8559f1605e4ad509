// Who the visitor is, as the widget needs it: shared by the loader (confab.js) and the package.

// A visitor token from the site's backend (verified visitors): a signed JWT or an
// `hmac.<base64url user id>.<hex hash>` token, or { userId, userHash } to build the latter.
export const token = (t) =>
  t && typeof t === "object"
    ? "hmac." + btoa(String.fromCharCode(...new TextEncoder().encode(String(t.userId))))
        .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "") + "." + t.userHash
    : t || undefined;

// Whose conversation is shown and stored: the token's user id (the `hmac.` form's, or a JWT's
// `sub`, both as UTF-8 bytes), so that a refreshed JWT keeps the history; the whole token for
// any other shape. Hashed (cyrb53, 53 bits): the key of a stored conversation never holds a
// token, which is a credential. "" is an anonymous visitor.
export const identity = (t) => {
  if (!t) return "";
  const [kind, id, sig] = t.split(".");
  const b64 = (s) => atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  let user = "t" + t;
  try {
    if (kind === "hmac") user = "u" + b64(id);
    else if (sig !== undefined) {
      const sub = JSON.parse(b64(id)).sub;
      if (typeof sub === "string") user = "u" + sub;
    }
  } catch {
    // Not base64 or not JSON: the whole token stands for its holder.
  }
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
  for (let i = 0; i < user.length; i++) {
    const c = user.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
};

// Forgets what is stored of the conversations of the visitor holding `visitorToken` and of the
// anonymous visitor, for the chat stored under `storageKey` (the site key, and "/name" for a
// named chat): storage::forget in the widget, for a reset before the module is loaded.
// Synchronous, so that a page may navigate right after.
export const forget = (storageKey, visitorToken) => {
  try {
    for (const id of [identity(visitorToken), ""]) {
      // storage::key: the conversation, and its id on the relay.
      const slot = "confab:v2:" + storageKey + (id ? ":" + id : "");
      for (const suffix of ["", "#stream", "#conversation"]) localStorage.removeItem(slot + suffix);
    }
  } catch {
    // Storage disabled: there is nothing stored to forget.
  }
};
