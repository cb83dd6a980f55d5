// `/`: sign in or up (password, Google, Microsoft), then my meetings, my
// invitations, and a form to schedule a meeting with invitees.

import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import * as api from "./api";
import { OauthProvider } from "./gen/unio/v1/auth_pb";
import { InviteStatus, JoinPolicy, type Meeting, MeetingStatus } from "./gen/unio/v1/meetings_pb";
import { field, h, show, status } from "./dom";

export async function home(): Promise<void> {
  if (!api.signedIn()) return signIn();
  let me;
  try {
    me = await api.authed(() => api.users.getMe({}));
  } catch (e) {
    if (api.code(e) === api.Code.Unauthenticated) {
      api.forget();
      return signIn();
    }
    show(h("p", { class: "error", role: "alert", text: api.describe(e) }));
    return;
  }
  whoAmI(me.displayName);
  const list = h("section", { "aria-labelledby": "mine" }, h("h2", { id: "mine", text: "My meetings" }));
  const invites = h("section", { "aria-labelledby": "inv" }, h("h2", { id: "inv", text: "Invitations" }));
  show(
    h("h1", { text: `Hello, ${me.displayName}` }),
    me.emailVerified
      ? null
      : h("p", { class: "note", text: "Verify your email address (see the link we mailed you) to receive invitations." }),
    schedule(() => void meetingsList(list)),
    list,
    invites,
  );
  await Promise.all([meetingsList(list), invitationList(invites)]);
}

export function whoAmI(name: string): void {
  const who = document.getElementById("who")!;
  who.replaceChildren(
    h("span", { text: name }),
    h("button", { type: "button", class: "link", onclick: () => void signOut(), text: "Sign out" }),
  );
}

async function signOut(): Promise<void> {
  const t = api.tokens();
  try {
    // Authorised, refreshing first if need be: the server must revoke
    // the session, not only this page forget it.
    // (The refresh token read at the call: a refresh may renew it first.)
    if (t) await api.authed(() => api.auth.logout({ refreshToken: api.tokens()?.refresh ?? t.refresh }));
  } catch {
    // Signed out here either way.
  }
  api.forget();
  location.assign("/");
}

function signIn(): void {
  const email = h("input", { type: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true, minlength: 10 });
  const name = h("input", { type: "text", autocomplete: "name" });
  const line = status();
  const submit = async (e: Event, signUp: boolean) => {
    e.preventDefault();
    line.textContent = signUp ? "Creating your account…" : "Signing in…";
    try {
      const res = signUp
        ? await api.auth.signUp({ email: email.value, password: password.value, displayName: name.value })
        : await api.auth.login({ email: email.value, password: password.value });
      api.keep(res.tokens);
      const back = api.safeReturn(sessionStorage.getItem("unio.return"));
      sessionStorage.removeItem("unio.return");
      location.assign(back);
    } catch (err) {
      line.textContent = api.describe(err);
      line.className = "status error";
    }
  };
  const form = h(
    "form",
    { class: "card", onsubmit: (e) => void submit(e, false) },
    h("h1", { text: "Sign in to UNIO" }),
    field("Email", email),
    field("Password", password),
    field("Display name (to sign up)", name),
    h(
      "p",
      { class: "actions" },
      h("button", { type: "submit", text: "Sign in" }),
      h("button", { type: "button", onclick: (e) => void submit(e, true), text: "Sign up" }),
    ),
    line,
  );
  const providers = h("p", { class: "actions" });
  for (const [label, provider] of [
    ["Sign in with Google", OauthProvider.GOOGLE],
    ["Sign in with Microsoft", OauthProvider.MICROSOFT],
  ] as const) {
    providers.append(
      h("button", {
        type: "button",
        onclick: () => void startOAuth(provider, line),
        text: label,
      }),
    );
  }
  show(form, providers);
  email.focus();
}

async function startOAuth(provider: OauthProvider, line: HTMLElement): Promise<void> {
  try {
    const res = await api.auth.startOAuth({ provider, redirectUri: `${location.origin}/oauth/callback` });
    sessionStorage.setItem("unio.oauth", JSON.stringify({ provider, state: res.state }));
    location.assign(res.authorizationUrl);
  } catch (e) {
    line.textContent = api.describe(e);
    line.className = "status error";
  }
}

function when(m: Meeting): string {
  return m.startTime ? timestampDate(m.startTime).toLocaleString() : "";
}

async function meetingsList(section: HTMLElement): Promise<void> {
  section.querySelector("ul, p.empty")?.remove();
  try {
    const res = await api.authed(() => api.meetings.listMeetings({ pageSize: 50 }));
    const live = res.meetings.filter((m) => m.status === MeetingStatus.SCHEDULED || m.status === MeetingStatus.ONGOING);
    if (live.length === 0) {
      section.append(h("p", { class: "empty", text: "No upcoming meetings." }));
      return;
    }
    section.append(
      h(
        "ul",
        { class: "meetings" },
        ...live.map((m) =>
          h(
            "li",
            {},
            h("a", { href: `/m/${m.id}`, text: m.title }),
            ` — ${when(m)}${m.status === MeetingStatus.ONGOING ? " (live)" : ""}`,
          ),
        ),
      ),
    );
  } catch (e) {
    section.append(h("p", { class: "error", text: api.describe(e) }));
  }
}

async function invitationList(section: HTMLElement): Promise<void> {
  try {
    const res = await api.authed(() => api.meetings.listInvites({ statuses: [InviteStatus.PENDING] }));
    if (res.invites.length === 0) {
      section.append(h("p", { class: "empty", text: "No pending invitations." }));
      return;
    }
    const items = res.invites.map((inv) => {
      const answer = async (response: InviteStatus) => {
        await api.authed(() => api.meetings.respondToInvite({ inviteId: inv.id, response }));
        item.replaceChildren(h("a", { href: `/m/${inv.meetingId}`, text: "Open the meeting" }));
      };
      const item = h(
        "li",
        {},
        h("a", { href: `/m/${inv.meetingId}`, text: "A meeting you are invited to" }),
        " ",
        h("button", { type: "button", onclick: () => void answer(InviteStatus.ACCEPTED), text: "Accept" }),
        h("button", { type: "button", onclick: () => void answer(InviteStatus.DECLINED), text: "Decline" }),
      );
      return item;
    });
    section.append(h("ul", {}, ...items));
  } catch (e) {
    section.append(h("p", { class: "error", text: api.describe(e) }));
  }
}

function schedule(done: () => void): HTMLElement {
  const title = h("input", { type: "text", required: true, maxlength: 200 });
  const start = h("input", { type: "datetime-local", required: true });
  const soon = new Date(Date.now() + 10 * 60_000);
  soon.setSeconds(0, 0);
  start.value = new Date(soon.getTime() - soon.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  const duration = h("input", { type: "number", min: 1, max: 1440, value: 30, required: true });
  const invitees = h("input", { type: "text", placeholder: "ada@example.com, bob@example.com" });
  const open = h("input", { type: "checkbox" });
  const lobby = h("input", { type: "checkbox" });
  const line = status();
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: async (e: Event) => {
        e.preventDefault();
        line.textContent = "Scheduling…";
        line.className = "status";
        try {
          const m = await api.authed(() =>
            api.meetings.createMeeting({
              title: title.value,
              startTime: timestampFromDate(new Date(start.value)),
              durationMinutes: Number(duration.value),
              inviteeEmails: invitees.value
                .split(/[,\s]+/)
                .map((s) => s.trim())
                .filter(Boolean),
              joinPolicy: open.checked ? JoinPolicy.ANYONE_WITH_LINK : JoinPolicy.INVITED_ONLY,
            }),
          );
          if (lobby.checked) {
            await api.authed(() =>
              api.meetings.updateMeeting({
                meeting: { id: m.id, waitingRoom: true },
                updateMask: { paths: ["waiting_room"] },
              }),
            );
          }
          line.replaceChildren("Scheduled: ", h("a", { href: `/m/${m.id}`, class: "join-url", text: m.joinUrl }));
          form.reset();
          done();
        } catch (err) {
          line.textContent = api.describe(err);
          line.className = "status error";
        }
      },
    },
    h("h2", { text: "Schedule a meeting" }),
    field("Title", title),
    field("Starts", start),
    field("Minutes", duration),
    field("Invite (emails)", invitees),
    field("Anyone with the link may join", open),
    field("Waiting room", lobby),
    h("p", { class: "actions" }, h("button", { type: "submit", text: "Schedule" })),
    line,
  );
  return form;
}
