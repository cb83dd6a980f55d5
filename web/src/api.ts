// The API over gRPC-Web, on the page's own origin: one transport, typed
// clients generated from ../proto, and the session's tokens.
//
// Tokens live in localStorage (the page's scripts must read them to send
// them); the server serves the page with a strict Content-Security-Policy
// so that no injected script runs next to them.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "./gen/unio/v1/auth_pb";
import { ChatService } from "./gen/unio/v1/chat_pb";
import { FileService } from "./gen/unio/v1/files_pb";
import { MeetingService } from "./gen/unio/v1/meetings_pb";
import { NotificationService } from "./gen/unio/v1/notifications_pb";
import { RoomService } from "./gen/unio/v1/room_pb";
import { UserService } from "./gen/unio/v1/users_pb";

const KEY = "unio.tokens";

interface Tokens {
  access: string;
  refresh: string;
}

export function tokens(): Tokens | null {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? (JSON.parse(raw) as Tokens) : null;
  } catch {
    return null;
  }
}

export function signedIn(): boolean {
  return tokens() !== null;
}

export function keep(pair: { accessToken: string; refreshToken: string } | undefined): void {
  if (!pair) return;
  localStorage.setItem(KEY, JSON.stringify({ access: pair.accessToken, refresh: pair.refreshToken }));
}

export function forget(): void {
  localStorage.removeItem(KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const t = tokens();
  if (t && !req.header.has("authorization")) {
    req.header.set("authorization", `Bearer ${t.access}`);
  }
  return next(req);
};

const transport = createGrpcWebTransport({
  baseUrl: location.origin,
  interceptors: [bearer],
});

function client<T extends DescService>(service: T): Client<T> {
  return createClient(service, transport);
}

export const auth = client(AuthService);
export const users = client(UserService);
export const meetings = client(MeetingService);
export const rooms = client(RoomService);
export const chat = client(ChatService);
export const files = client(FileService);
export const notifications = client(NotificationService);

let refreshing: Promise<boolean> | null = null;

/**
 * Trades the refresh token for a new pair; false when the session is over.
 * Tabs share the pair, and the server takes a refresh token used twice for
 * a stolen one (it revokes the session): so one tab at a time refreshes
 * (a Web Lock), and a tab that finds the pair already renewed uses it.
 */
export function refresh(): Promise<boolean> {
  const presented = tokens()?.refresh;
  refreshing ??= (async () => {
    try {
      const renew = async (): Promise<boolean> => {
        const t = tokens();
        if (!t) return false;
        if (t.refresh !== presented) return true; // Another tab did it.
        try {
          // Bounded: every tab waits on this under the lock.
          keep(await auth.refreshToken({ refreshToken: t.refresh }, { timeoutMs: 15_000 }));
          return true;
        } catch (e) {
          // Forget only the pair that failed, not one another tab stored.
          if (ConnectError.from(e).code === Code.Unauthenticated && tokens()?.refresh === t.refresh) forget();
          return false;
        }
      };
      return navigator.locks ? await navigator.locks.request("unio.refresh", renew) : await renew();
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Runs `call`, and once more after refreshing an expired access token. */
export async function authed<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (ConnectError.from(e).code === Code.Unauthenticated && (await refresh())) {
      return call();
    }
    throw e;
  }
}

/** What went wrong, for people: the server's message without the code. */
export function describe(e: unknown): string {
  const err = ConnectError.from(e);
  return err.rawMessage || err.message;
}

/** The ErrorInfo reason of a failed call, if the server gave one. */
export function reason(e: unknown): string {
  const err = ConnectError.from(e);
  for (const detail of err.details) {
    if ("type" in detail && detail.type === "google.rpc.ErrorInfo") {
      const bytes = detail.value;
      return errorInfoReason(bytes);
    }
  }
  return "";
}

// google.rpc.ErrorInfo: field 1 `reason` (string). Read by hand: one field
// of one message does not need its schema in the bundle.
function errorInfoReason(bytes: Uint8Array): string {
  let i = 0;
  while (i < bytes.length) {
    const key = bytes[i++];
    const field = key >> 3;
    const wire = key & 7;
    if (wire !== 2) return "";
    let len = 0;
    let shift = 0;
    for (;;) {
      if (i >= bytes.length || shift > 28) return "";
      const b = bytes[i++];
      len |= (b & 0x7f) << shift;
      if (b < 0x80) break;
      shift += 7;
    }
    if (i + len > bytes.length) return "";
    if (field === 1) return new TextDecoder().decode(bytes.subarray(i, i + len));
    i += len;
  }
  return "";
}

export function code(e: unknown): Code {
  return ConnectError.from(e).code;
}

/** A same-origin path to go back to, or `/`: never another site. */
export function safeReturn(raw: string | null): string {
  if (!raw || !/^\/(?![/\\])/.test(raw)) return "/";
  try {
    const url = new URL(raw, location.origin);
    return url.origin === location.origin ? url.pathname + url.search : "/";
  } catch {
    return "/";
  }
}

export { Code };
