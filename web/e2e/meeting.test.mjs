// End to end in Debian's Chromium (DESIGN §13): two people sign up in two
// browser profiles, one schedules a meeting and invites the other, both
// open the join URL and talk over WebRTC; chat both ways (markup stays
// text); a file goes across with the same sha256; a network blip is
// resumed; the waiting room admits a guest; the host ends the meeting.
//
// Run by the test command with UNIO_BIN pointing at a built `unio`; it
// starts that server on a free port with its own data directory.

import { test, before, after } from "node:test";
import { createInterface } from "node:readline";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const ARTIFACTS = new URL("./artifacts/", import.meta.url).pathname;
const PASSWORD = "correct horse battery";
let server;
let base;
let log = "";
let browser;
let dataDir;

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "unio-e2e-"));
  const bin = process.env.UNIO_BIN ?? new URL("../../target/debug/unio", import.meta.url).pathname;
  server = spawn(bin, [], {
    env: {
      // Nothing of the caller's UNIO_* settings: this server is the test's.
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("UNIO_"))),
      UNIO_ADDR: "127.0.0.1:0",
      UNIO_ADMIN_ADDR: "",
      UNIO_STUN_URLS: "",
      UNIO_DATA_DIR: dataDir,
      RUST_LOG: "info",
      NO_COLOR: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const collect = (chunk) => (log += chunk.toString());
  server.stdout.on("data", collect);
  server.stderr.on("data", collect);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const m = /listening on (127\.0\.0\.1:\d+)/.exec(log);
    if (m) {
      base = `http://${m[1]}`;
      break;
    }
    if (Date.now() > deadline || server.exitCode !== null) throw new Error(`server did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once("exit", r));
    server.kill("SIGTERM");
    await exited;
  }
  rmSync(dataDir, { recursive: true, force: true });
});

async function person(name) {
  const context = await browser.newContext({ permissions: ["camera", "microphone"], acceptDownloads: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error:`, e));
  return { context, page, name };
}

async function signUp({ page }, email, displayName) {
  await page.goto(`${base}/`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByLabel("Display name (to sign up)").fill(displayName);
  await page.getByRole("button", { name: "Sign up" }).click();
  await page.getByRole("heading", { name: /^Hello,/ }).waitFor();
}

/** Signs up, then follows the verification link mailed (to the log). */
async function signUpVerified(who, email, displayName) {
  await signUp(who, email, displayName);
  await who.page.goto(`${base}/verify?token=${await verificationToken(email)}`);
  await who.page.getByRole("heading", { name: "Address verified" }).waitFor();
}

/** The last verification link the console mailer logged for `email`. */
async function verificationToken(email) {
  for (let i = 0; i < 100; i++) {
    const lines = log.split("\n").filter((l) => l.includes(`to=${email}`) && l.includes("verify?token="));
    const m = lines.length && /verify\?token=([A-Za-z0-9_\-]+)/.exec(lines[lines.length - 1]);
    if (m) return m[1];
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no verification mail for ${email}`);
}

async function schedule({ page }, title, invitee, { waitingRoom = false } = {}) {
  await page.goto(`${base}/`);
  await page.getByLabel("Title").fill(title);
  await page.getByLabel("Invite (emails)").fill(invitee);
  if (waitingRoom) await page.getByLabel("Waiting room").check();
  await page.getByRole("button", { name: "Schedule" }).click();
  const link = page.locator("a.join-url");
  const failed = page.locator("form .status.error");
  await link.or(failed).waitFor();
  if (await failed.count()) throw new Error(`scheduling failed: ${await failed.textContent()}`);
  return await link.getAttribute("href");
}

/** Waits until `page` holds a connected peer whose video plays. */
async function connectedVideo(page) {
  await page.waitForFunction(
    () =>
      [...document.querySelectorAll("figure.tile[data-state=connected] video")].some(
        (v) => v.srcObject && v.srcObject.getVideoTracks().length > 0 && v.videoWidth > 0,
      ),
    null,
    { timeout: 20_000 },
  );
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

test("two browsers meet, chat, share a file, resume, and the host ends it", async () => {
  const host = await person("host");
  const guest = await person("guest");
  await signUpVerified(host, "host@example.com", "Host");
  // Markup in a name must show as text.
  const guestName = '<img src=x onerror="window.__pwned=1">Guest';
  await signUpVerified(guest, "guest@example.com", guestName);

  const path = await schedule(host, "Design review", "guest@example.com");
  assert.match(path, /^\/m\/[0-9a-f-]{36}$/);
  await host.page.goto(`${base}${path}`);
  await host.page.getByText("You are in the meeting.").waitFor();
  await guest.page.goto(`${base}${path}`);
  await guest.page.getByText("You are in the meeting.").waitFor();

  await Promise.all([connectedVideo(host.page), connectedVideo(guest.page)]);
  await host.page.screenshot({ path: `${ARTIFACTS}host-in-call.png` });
  await guest.page.screenshot({ path: `${ARTIFACTS}guest-in-call.png` });

  // The name shows as text, in the list and in the video caption.
  const listed = host.page.locator(".people li .name", { hasText: "onerror" });
  await listed.waitFor();
  assert.equal(await listed.textContent(), guestName);
  assert.equal(await host.page.locator(".people img").count(), 0);

  // Chat both ways; markup stays text.
  const markup = "<b>bold</b><script>window.__pwned=1</script>";
  await host.page.getByLabel("Message", { exact: true }).fill(markup);
  await host.page.getByLabel("Message", { exact: true }).press("Enter");
  await guest.page.locator(".messages .text", { hasText: "<b>bold</b>" }).waitFor();
  assert.equal(await guest.page.locator(".messages b, .messages script").count(), 0);
  await guest.page.getByLabel("Message", { exact: true }).fill("hello host");
  await guest.page.getByLabel("Message", { exact: true }).press("Enter");
  await host.page.locator(".messages .text", { hasText: "hello host" }).waitFor();
  assert.equal(await guest.page.evaluate(() => window.__pwned), undefined);
  assert.equal(await host.page.evaluate(() => window.__pwned), undefined);

  // A file across: same bytes on the other side.
  // (Plain text: the server stores only allowed types, sniffed from the
  // bytes; 1.5 MB goes in three chunks.)
  const bytes = Buffer.from(randomBytes(1_125_000).toString("base64"));
  await host.page.getByLabel("Share a file").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: bytes });
  const button = guest.page.getByRole("button", { name: "Download notes.txt" });
  await button.waitFor({ timeout: 20_000 }).catch(async (e) => {
    throw new Error(`${e.message}\nhost says: ${await host.page.locator(".status").allTextContents()}`);
  });
  const [download] = await Promise.all([guest.page.waitForEvent("download"), button.click()]);
  const saved = readFileSync(await download.path());
  assert.equal(sha256(saved), sha256(bytes));

  // A network blip: the guest goes offline and back, and resumes.
  await guest.context.setOffline(true);
  await guest.page.getByText("Connection lost; reconnecting…").waitFor({ timeout: 20_000 });
  await guest.context.setOffline(false);
  await guest.page.getByText("Reconnected.").waitFor({ timeout: 20_000 });
  await host.page.getByLabel("Message", { exact: true }).fill("still there?");
  await host.page.getByLabel("Message", { exact: true }).press("Enter");
  await guest.page.locator(".messages .text", { hasText: "still there?" }).waitFor();

  // The host ends the meeting; both pages say so.
  await host.page.getByRole("button", { name: "End meeting" }).click();
  await host.page.getByRole("heading", { name: "This meeting is over" }).waitFor();
  await guest.page.getByRole("heading", { name: "This meeting is over" }).waitFor();
  await guest.page.screenshot({ path: `${ARTIFACTS}guest-ended.png` });
  // Its join URL now says it is over.
  await guest.page.goto(`${base}${path}`);
  await guest.page.getByRole("heading", { name: "This meeting is over" }).waitFor();
  await host.context.close();
  await guest.context.close();
});

test("the waiting room holds a guest until the host admits them", async () => {
  const host = await person("host2");
  const guest = await person("guest2");
  await signUpVerified(host, "host2@example.com", "Host Two");
  await signUpVerified(guest, "guest2@example.com", "Guest Two");
  const path = await schedule(host, "Interview", "guest2@example.com", { waitingRoom: true });
  await host.page.goto(`${base}${path}`);
  await host.page.getByText("You are in the meeting.").waitFor();
  await guest.page.goto(`${base}${path}`);
  await guest.page.getByRole("heading", { name: "Waiting for the host to let you in" }).waitFor();
  await guest.page.screenshot({ path: `${ARTIFACTS}guest-waiting.png` });
  await host.page.getByRole("button", { name: "Admit Guest Two" }).click();
  await guest.page.getByText("You are in the meeting.").waitFor();
  await Promise.all([connectedVideo(host.page), connectedVideo(guest.page)]);
  // Hands and reactions.
  await guest.page.getByRole("button", { name: "Raise hand" }).click();
  await host.page.locator(".people li", { hasText: "hand raised (#1)" }).waitFor();
  await host.page.getByRole("button", { name: "Lower Guest Two's hand" }).click();
  await guest.page.getByRole("button", { name: "Raise hand" }).waitFor();
  await host.page.getByRole("button", { name: "React 🎉" }).click();
  await guest.page.getByText("Host Two reacted 🎉").waitFor();
  // Non-hosts do not see host controls.
  assert.equal(await guest.page.getByRole("button", { name: "End meeting" }).count(), 0);
  await host.context.close();
  await guest.context.close();
});

test("a native client on Connect signals with a browser page", async () => {
  const host = await person("host3");
  await signUpVerified(host, "host3@example.com", "Host Three");
  const path = await schedule(host, "Native and browser", "");
  const meetingId = path.slice(3);
  const { access } = JSON.parse(await host.page.evaluate(() => localStorage.getItem("unio.tokens")));
  // The native peer joins first (same user, another device).
  const bin = process.env.UNIO_NATIVE_PEER ?? new URL("../../target/debug/examples/native_peer", import.meta.url).pathname;
  const native = spawn(bin, ["--addr", base, "--meeting", meetingId], {
    env: { ...process.env, UNIO_ACCESS_TOKEN: access },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const heard = [];
  const waiters = [];
  createInterface({ input: native.stdout }).on("line", (l) => {
    const e = JSON.parse(l);
    heard.push(e);
    for (const w of waiters.splice(0)) w();
  });
  const hear = async (kind) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const e = heard.find((x) => x.event === kind);
      if (e) return e;
      if (Date.now() > deadline) throw new Error(`native peer never heard ${kind}: ${JSON.stringify(heard)}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
  };
  try {
    const joined = await hear("joined");
    // The browser joins and offers to the native peer, which answers.
    await host.page.goto(`${base}${path}`);
    await host.page.getByText("You are in the meeting.").waitFor();
    const offer = await hear("offer");
    await hear("answered");
    await hear("ice_candidate");
    const tile = host.page.locator(`figure.tile[data-participant="${joined.participant_id}"]`);
    await tile.waitFor();
    await host.page.waitForFunction(
      (id) => document.querySelector(`figure.tile[data-participant="${id}"]`)?.dataset.signaling === "stable",
      joined.participant_id,
      { timeout: 20_000 },
    );
    assert.ok(offer.from);
    await host.page.screenshot({ path: `${ARTIFACTS}native-and-browser.png` });
  } finally {
    native.kill("SIGTERM");
    await host.context.close();
  }
});
