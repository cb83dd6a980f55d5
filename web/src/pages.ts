// `/verify?token=`, `/oauth/callback`, and the page for what is not here.

import * as api from "./api";
import { h, show } from "./dom";

export async function verify(): Promise<void> {
  const token = new URLSearchParams(location.search).get("token") ?? "";
  // The token does not stay in the address bar or the history.
  history.replaceState(null, "", "/verify");
  show(h("h1", { text: "Verifying your address…" }));
  try {
    const user = await api.auth.verifyEmail({ token });
    show(
      h("h1", { text: "Address verified" }),
      h("p", { text: `${user.email} is verified. Invitations to it now reach you.` }),
      h("p", {}, h("a", { href: "/", text: "Continue" })),
    );
  } catch (e) {
    show(
      h("h1", { text: "This link does not work" }),
      h("p", { role: "alert", text: api.describe(e) }),
      h("p", {}, h("a", { href: "/", text: "Back to UNIO" })),
    );
  }
}

export async function oauthCallback(): Promise<void> {
  const params = new URLSearchParams(location.search);
  history.replaceState(null, "", "/oauth/callback");
  const saved = JSON.parse(sessionStorage.getItem("unio.oauth") ?? "null") as { provider: number; state: string } | null;
  sessionStorage.removeItem("unio.oauth");
  show(h("h1", { text: "Signing you in…" }));
  if (params.get("error") || !saved || saved.state !== params.get("state")) {
    show(
      h("h1", { text: "Sign-in did not complete" }),
      // A fixed message: the query is anyone's to write.
      h("p", { role: "alert", text: "The sign-in was cancelled, refused by the provider, or is too old; try again." }),
      h("p", {}, h("a", { href: "/", text: "Back to UNIO" })),
    );
    return;
  }
  try {
    const res = await api.auth.completeOAuth({
      provider: saved.provider,
      code: params.get("code") ?? "",
      state: params.get("state") ?? "",
    });
    api.keep(res.tokens);
    const back = api.safeReturn(sessionStorage.getItem("unio.return"));
    sessionStorage.removeItem("unio.return");
    location.replace(back);
  } catch (e) {
    show(h("h1", { text: "Sign-in failed" }), h("p", { role: "alert", text: api.describe(e) }), h("p", {}, h("a", { href: "/", text: "Back to UNIO" })));
  }
}

export function notFound(): void {
  show(h("h1", { text: "Not found" }), h("p", {}, h("a", { href: "/", text: "Back to UNIO" })));
}
