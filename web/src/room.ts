// `/m/<meeting id>`: the meeting. Joins through Subscribe (gRPC-Web has no
// client streaming) and sends with Publish; every participant's video in a
// mesh of RTCPeerConnections; participants with roles, media and hands;
// chat with history and typing; files; the waiting room; host controls;
// and a resume with the resume token after a network blip.
//
// Negotiation: whoever joins offers to everyone already there; the others
// answer. So two peers never offer to each other at once.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as api from "./api";
import { append, h, show, status } from "./dom";
import { whoAmI } from "./home";
import type { ChatMessage } from "./gen/unio/v1/chat_pb";
import type { SharedFile } from "./gen/unio/v1/files_pb";
import { type Meeting, MeetingStatus } from "./gen/unio/v1/meetings_pb";
import {
  type ClientEvent,
  type Joined,
  type Participant,
  ParticipantRole,
  type ServerEvent,
} from "./gen/unio/v1/room_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ClientEventSchema } from "./gen/unio/v1/room_pb";

type Outgoing = MessageInitShape<typeof ClientEventSchema>["event"];

const REACTIONS = ["👍", "👏", "🎉", "❤️", "😂", "😮", "🙌", "🤔"];
const CHUNK = 512 * 1024;
const FILE_NOTICE = "Shared a file: ";
const MAX_PENDING_ICE = 50;

interface Peer {
  pc: RTCPeerConnection;
  pendingIce: RTCIceCandidateInit[];
  tile: HTMLElement;
  video: HTMLVideoElement;
}

export async function room(meetingId: string): Promise<void> {
  if (!api.signedIn()) {
    sessionStorage.setItem("unio.return", location.pathname);
    show(
      h("h1", { text: "Sign in to join this meeting" }),
      h("p", {}, h("a", { href: "/", text: "Sign in or sign up" })),
    );
    return;
  }
  let me;
  let meeting: Meeting;
  try {
    me = await api.authed(() => api.users.getMe({}));
    meeting = await api.authed(() => api.meetings.getMeeting({ meetingId }));
  } catch (e) {
    const code = api.code(e);
    if (code === api.Code.Unauthenticated) {
      api.forget();
      sessionStorage.setItem("unio.return", location.pathname);
      location.assign("/");
      return;
    }
    const title =
      code === api.Code.NotFound
        ? "This meeting does not exist"
        : code === api.Code.PermissionDenied
          ? "This meeting is not yours to join"
          : "The meeting cannot be opened";
    show(h("h1", { text: title }), h("p", { role: "alert", text: api.describe(e) }), h("p", {}, h("a", { href: "/", text: "Back to UNIO" })));
    return;
  }
  whoAmI(me.displayName);
  if (meeting.status === MeetingStatus.COMPLETED || meeting.status === MeetingStatus.CANCELLED) {
    return over(meeting);
  }
  await new Room(meeting, me.id).start();
}

function over(meeting: Meeting): void {
  show(
    h("h1", { class: "ended", text: "This meeting is over" }),
    h("p", { text: `“${meeting.title}” has ${meeting.status === MeetingStatus.CANCELLED ? "been cancelled" : "ended"}.` }),
    h("p", {}, h("a", { href: "/", text: "Back to your meetings" })),
  );
}

class Room {
  private sessionId = "";
  private participantId = "";
  private resumeToken = "";
  private lastSeq = 0n;
  private participants = new Map<string, Participant>();
  private peers = new Map<string, Peer>();
  private iceServers: RTCIceServer[] = [];
  private local = new MediaStream();
  private screen: MediaStream | null = null;
  private audioOn = true;
  private videoOn = true;
  private pinger = 0;
  private stream: AbortController | null = null;
  private done = false;
  private chatIds = new Set<string>();
  private typingTimer = 0;
  private typingSent = false;
  /** Who is typing (participant id → since when). */
  private typers = new Map<string, number>();
  private joinedOnce = false;

  // The page.
  private line = status();
  private grid = h("div", { class: "grid", "aria-label": "Videos" });
  private people = h("ul", { class: "people", "aria-label": "Participants" });
  private lobby = h("section", { class: "lobby", hidden: true, "aria-labelledby": "lobby-h" });
  private messages = h("ol", { class: "messages", "aria-live": "polite", "aria-label": "Chat messages" });
  private typingLine = h("p", { class: "typing", "aria-live": "polite" });
  private fileList = h("ul", { class: "files", "aria-label": "Files" });
  private controls = h("div", { class: "controls", role: "toolbar", "aria-label": "Meeting controls" });
  private waitingPanel = h("section", { class: "waiting", hidden: true });

  constructor(
    private meeting: Meeting,
    private myUserId: string,
  ) {}

  async start(): Promise<void> {
    try {
      this.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    } catch {
      this.line.textContent = "No camera or microphone: you join without them.";
    }
    this.render();
    void this.loadChat();
    void this.loadFiles();
    window.addEventListener("pagehide", () => void this.leave());
    // A network blip: the stream may not notice for a while (a fetch
    // stream outlives the network), so going offline ends it at once and
    // coming back resumes at once.
    window.addEventListener("offline", () => this.blip());
    window.addEventListener("online", () => this.wake());
    await this.connect();
  }

  private render(): void {
    const mine = this.tile(this.local, "You", true);
    this.grid.append(mine.tile);
    const chatInput = h("input", { type: "text", maxlength: 4000, autocomplete: "off" });
    chatInput.addEventListener("input", () => this.typing());
    const chatForm = h(
      "form",
      {
        class: "chat-form",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const text = chatInput.value.trim();
          if (!text) return;
          chatInput.value = "";
          void this.sendChat(text);
        },
      },
      h("label", { for: "chat-input", text: "Message" }),
      chatInput,
      h("button", { type: "submit", text: "Send" }),
    );
    chatInput.id = "chat-input";
    const upload = h("input", { type: "file", id: "file-input" });
    const progress = h("progress", { max: 100, value: 0, hidden: true, "aria-label": "Upload progress" });
    upload.addEventListener("change", () => {
      const file = upload.files?.[0];
      if (file) void this.upload(file, progress).finally(() => (upload.value = ""));
    });
    append(this.lobby, h("h2", { id: "lobby-h", text: "Waiting to join" }), h("ul", { class: "lobby-list" }));
    show(
      h("h1", { text: this.meeting.title }),
      this.line,
      this.waitingPanel,
      h(
        "div",
        { class: "room" },
        h("section", { class: "stage", "aria-label": "Meeting" }, this.grid, this.controls),
        h(
          "aside",
          { class: "side" },
          this.lobby,
          h("section", { "aria-labelledby": "people-h" }, h("h2", { id: "people-h", text: "Participants" }), this.people),
          h(
            "section",
            { "aria-labelledby": "chat-h" },
            h("h2", { id: "chat-h", text: "Chat" }),
            this.messages,
            this.typingLine,
            chatForm,
          ),
          h(
            "section",
            { "aria-labelledby": "files-h" },
            h("h2", { id: "files-h", text: "Files" }),
            this.fileList,
            h("p", {}, h("label", { for: "file-input", text: "Share a file" }), upload, progress),
          ),
        ),
      ),
    );
    this.renderControls();
  }

  private renderControls(): void {
    const toggle = (label: string, pressed: boolean, act: () => void) =>
      h("button", { type: "button", "aria-pressed": pressed ? "true" : "false", onclick: act, text: label });
    const mine = this.participants.get(this.participantId);
    const handUp = !!mine?.handRaiseTime;
    const buttons: (HTMLElement | null)[] = [
      toggle(this.audioOn ? "Mute" : "Unmute", !this.audioOn, () => this.setAudio(!this.audioOn)),
      toggle(this.videoOn ? "Camera off" : "Camera on", !this.videoOn, () => this.setVideo(!this.videoOn)),
      toggle(this.screen ? "Stop sharing" : "Share screen", !!this.screen, () => void this.toggleScreen()),
      toggle(handUp ? "Lower hand" : "Raise hand", handUp, () => void this.send({ case: "raiseHand", value: { raised: !handUp } })),
      ...REACTIONS.map((emoji) =>
        h("button", {
          type: "button",
          class: "reaction",
          "aria-label": `React ${emoji}`,
          onclick: () => void this.send({ case: "reaction", value: { emoji } }),
          text: emoji,
        }),
      ),
      this.runs()
        ? h("button", {
            type: "button",
            "aria-pressed": this.meeting.locked ? "true" : "false",
            onclick: () => void this.setLocked(!this.meeting.locked),
            text: this.meeting.locked ? "Unlock meeting" : "Lock meeting",
          })
        : null,
      this.runs() ? h("button", { type: "button", class: "danger", onclick: () => void this.endMeeting(), text: "End meeting" }) : null,
      h("button", { type: "button", onclick: () => void this.leaveAndGo(), text: "Leave" }),
    ];
    this.controls.replaceChildren(...buttons.filter((b): b is HTMLElement => b !== null));
  }

  private runs(): boolean {
    const mine = this.participants.get(this.participantId);
    const role = mine?.role;
    return role === ParticipantRole.HOST || role === ParticipantRole.CO_HOST;
  }

  // ---- the stream ----------------------------------------------------

  private blip(): void {
    if (this.done) return;
    this.line.textContent = "Connection lost; reconnecting…";
    this.stream?.abort();
  }

  private wakeUp: (() => void) | null = null;

  private wake(): void {
    this.wakeUp?.();
  }

  private async connect(): Promise<void> {
    let delay = 500;
    while (!this.done) {
      this.stream = new AbortController();
      const opened = Date.now();
      try {
        const events = api.rooms.subscribe(
          { meetingId: this.meeting.id, resumeToken: this.resumeToken, lastSequence: this.lastSeq },
          { signal: this.stream.signal, timeoutMs: 0 },
        );
        for await (const ev of events) {
          this.handle(ev);
          if (this.done) return;
        }
        if (this.done) return;
        // The server ended the stream (replaced, fell behind): resume.
      } catch (e) {
        if (this.done) return;
        const code = api.code(e);
        const why = api.reason(e);
        if (code === api.Code.Unauthenticated) {
          // A refresh that failed for the network is a blip, not the end.
          if (!(await api.refresh()) && !api.signedIn()) return this.signedOut();
        } else if (code === api.Code.PermissionDenied) {
          return this.end(why === "KICKED" || why === "REMOVED_BY_HOST" ? "The host removed you from this meeting." : api.describe(e));
        } else if (code === api.Code.FailedPrecondition) {
          if (why === "MEETING_NOT_JOINABLE") {
            this.stop();
            return over(this.meeting);
          }
          return this.end(api.describe(e));
        } else if (code === api.Code.NotFound || (code === api.Code.ResourceExhausted && why === "LOBBY_FULL")) {
          return this.end(api.describe(e));
        } else {
          this.line.textContent = "Connection lost; reconnecting…";
        }
      }
      // A stream that lived a while was healthy: start backing off anew.
      if (Date.now() - opened > 10_000) delay = 500;
      // Full jitter, so that a restarted server is not hit by every
      // browser at once; the network coming back wakes it early.
      const wait = Math.random() * delay;
      await new Promise<void>((r) => {
        const timer = setTimeout(r, navigator.onLine ? wait : 60_000);
        this.wakeUp = () => {
          clearTimeout(timer);
          r();
        };
      });
      this.wakeUp = null;
      delay = Math.min(delay * 2, 15_000);
    }
  }

  /** The session is over (signed out elsewhere, expired): sign in again. */
  private signedOut(): void {
    this.stop();
    sessionStorage.setItem("unio.return", location.pathname);
    show(
      h("h1", { text: "Your session has ended" }),
      h("p", {}, h("a", { href: "/", text: "Sign in again to rejoin" })),
    );
  }

  private handle(ev: ServerEvent): void {
    if (ev.sequence > this.lastSeq) this.lastSeq = ev.sequence;
    const e = ev.event;
    switch (e.case) {
      case "joined":
        return this.joined(e.value);
      case "waiting":
        this.sessionId = e.value.sessionId;
        this.participantId = e.value.participantId;
        this.startPinger(Number(e.value.pingInterval?.seconds ?? 15n));
        this.waitingPanel.hidden = false;
        this.waitingPanel.replaceChildren(
          h("h2", { text: "Waiting for the host to let you in" }),
          h("p", { text: e.value.hostPresent ? "The host knows you are here." : "No host is in the meeting yet; please keep waiting." }),
        );
        return;
      case "lobby":
        return this.renderLobby(e.value.participants);
      case "participantJoined":
        if (e.value.participant) {
          this.participants.set(e.value.participant.participantId, e.value.participant);
          this.renderPeople();
        }
        return;
      case "participantLeft":
        this.typers.delete(e.value.participantId);
        this.participants.delete(e.value.participantId);
        this.dropPeer(e.value.participantId);
        this.renderPeople();
        return;
      case "signal":
        void this.signal(e.value.fromParticipantId, e.value.payload);
        return;
      case "chat":
        // The room has no file event: an upload is announced in chat, and
        // the list is read again.
        if (e.value.text.startsWith(FILE_NOTICE)) void this.loadFiles();
        return this.showChat(e.value);
      case "typing":
        if (e.value.isTyping) this.typers.set(e.value.participantId, Date.now());
        else this.typers.delete(e.value.participantId);
        this.renderTyping();
        // Typing that stops without saying so fades.
        setTimeout(() => this.renderTyping(), 6500);
        return;
      case "mediaState": {
        const p = this.participants.get(e.value.participantId);
        if (p) {
          p.mediaState = e.value.mediaState;
          this.renderPeople();
        }
        return;
      }
      case "hand": {
        const p = this.participants.get(e.value.participantId);
        if (p) {
          p.handRaiseTime = e.value.raised ? e.value.raiseTime : undefined;
          this.renderPeople();
          if (e.value.participantId === this.participantId) this.renderControls();
        }
        return;
      }
      case "reaction": {
        const tile = e.value.participantId === this.participantId ? this.grid.firstElementChild : this.peers.get(e.value.participantId)?.tile;
        const burst = h("span", { class: "burst", "aria-hidden": "true", text: e.value.emoji });
        tile?.append(burst);
        setTimeout(() => burst.remove(), 2500);
        const name = this.participants.get(e.value.participantId)?.displayName ?? "Someone";
        this.line.textContent = `${name} reacted ${e.value.emoji}`;
        return;
      }
      case "meetingUpdated":
        this.meeting = e.value;
        for (const p of this.participants.values()) {
          p.role =
            p.userId === e.value.hostId
              ? ParticipantRole.HOST
              : e.value.coHostIds.includes(p.userId)
                ? ParticipantRole.CO_HOST
                : ParticipantRole.ATTENDEE;
        }
        this.renderPeople();
        this.renderControls();
        return;
      case "meetingStatus":
        if (e.value.status === MeetingStatus.COMPLETED || e.value.status === MeetingStatus.CANCELLED) {
          this.meeting.status = e.value.status;
          this.stop();
          over(this.meeting);
        }
        return;
      case "error":
        if (e.value.code === "RESUME_FAILED") {
          // Join afresh: a new participant.
          this.resumeToken = "";
          this.lastSeq = 0n;
          return;
        }
        if (e.value.code === "LOBBY_DENIED") {
          this.end("The host did not let you in.");
          return;
        }
        this.line.textContent = e.value.message;
        return;
      default:
        return;
    }
  }

  private joined(j: Joined): void {
    this.waitingPanel.hidden = true;
    const resumed = j.resumed && this.joinedOnce;
    this.joinedOnce = true;
    this.sessionId = j.sessionId;
    this.participantId = j.participantId;
    this.resumeToken = j.resumeToken;
    if (j.meeting) this.meeting = j.meeting;
    this.iceServers = j.iceServers.map((s) => ({ urls: s.urls, username: s.username || undefined, credential: s.credential || undefined }));
    this.participants = new Map(j.participants.map((p) => [p.participantId, p]));
    this.startPinger(Number(j.pingInterval?.seconds ?? 15n));
    this.line.textContent = resumed ? "Reconnected." : "You are in the meeting.";
    if (!resumed) {
      for (const id of [...this.peers.keys()]) this.dropPeer(id);
      for (const p of j.participants) {
        if (p.participantId !== this.participantId) void this.offer(p.participantId);
      }
    } else {
      for (const id of [...this.peers.keys()]) if (!this.participants.has(id)) this.dropPeer(id);
      // Peers that did not survive the blip are offered again.
      for (const p of j.participants) {
        const peer = this.peers.get(p.participantId);
        if (p.participantId !== this.participantId && (!peer || peer.pc.connectionState === "failed" || peer.pc.connectionState === "closed")) {
          this.dropPeer(p.participantId);
          void this.offer(p.participantId);
        }
      }
    }
    this.renderPeople();
    this.renderControls();
    this.sendMedia();
  }

  private startPinger(seconds: number): void {
    clearInterval(this.pinger);
    this.pinger = window.setInterval(() => void this.send({ case: "ping", value: {} }), Math.max(seconds, 5) * 1000);
  }

  private async send(event: Outgoing): Promise<void> {
    if (!this.sessionId) return;
    try {
      await api.authed(() => api.rooms.publish({ sessionId: this.sessionId, event: { event } }));
    } catch (e) {
      const code = api.code(e);
      // A keep-alive that cannot reach the server: the stream is as good
      // as gone; resume now rather than when the server gives up on it.
      if (event?.case === "ping" && (code === api.Code.Unavailable || code === api.Code.Unknown)) return this.blip();
      // A session being replaced or resumed: the stream says what next.
      if (code !== api.Code.FailedPrecondition && code !== api.Code.NotFound) this.line.textContent = api.describe(e);
    }
  }

  // ---- WebRTC ----------------------------------------------------------

  private peer(id: string): Peer {
    let peer = this.peers.get(id);
    if (peer) return peer;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const remote = new MediaStream();
    const { tile, video } = this.tile(remote, this.participants.get(id)?.displayName ?? "Guest", false);
    tile.dataset.participant = id;
    this.grid.append(tile);
    // Send what we have (the shared screen in place of the camera);
    // receive audio and video either way, even without a camera.
    for (const kind of ["audio", "video"] as const) {
      const track = kind === "video" && this.screen ? this.screen.getVideoTracks()[0] : this.local.getTracks().find((t) => t.kind === kind);
      if (track) pc.addTrack(track, this.local);
      else pc.addTransceiver(kind, { direction: "recvonly" });
    }
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      video.srcObject = remote;
    };
    pc.onicecandidate = (ev) => {
      if (!ev.candidate) return;
      const c = ev.candidate.toJSON();
      void this.send({
        case: "signal",
        value: {
          toParticipantId: id,
          payload: { case: "iceCandidate", value: { candidate: c.candidate ?? "", sdpMid: c.sdpMid ?? "", sdpMlineIndex: c.sdpMLineIndex ?? 0 } },
        },
      });
    };
    // Visible to tests and styles: how far the connection got.
    pc.onconnectionstatechange = () => {
      tile.dataset.state = pc.connectionState;
    };
    pc.onsignalingstatechange = () => {
      tile.dataset.signaling = pc.signalingState;
    };
    peer = { pc, pendingIce: [], tile, video };
    this.peers.set(id, peer);
    return peer;
  }

  private dropPeer(id: string): void {
    const peer = this.peers.get(id);
    if (!peer) return;
    peer.pc.close();
    peer.tile.remove();
    this.peers.delete(id);
  }

  private async offer(id: string): Promise<void> {
    const { pc } = this.peer(id);
    if (pc.signalingState !== "stable") return;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await this.send({ case: "signal", value: { toParticipantId: id, payload: { case: "offer", value: { sdp: offer.sdp ?? "" } } } });
  }

  private async signal(from: string, payload: { case: string | undefined; value?: unknown }): Promise<void> {
    // Only from someone in the room: a late or stray signal must not make
    // a connection (and a tile) for no one.
    if (!this.participants.has(from) || from === this.participantId) return;
    try {
      if (payload.case === "offer") {
        let peer = this.peers.get(from);
        if (peer && (peer.pc.signalingState !== "stable" || peer.pc.connectionState === "failed")) {
          this.dropPeer(from);
          peer = undefined;
        }
        const { pc, pendingIce } = peer ?? this.peer(from);
        await pc.setRemoteDescription({ type: "offer", sdp: (payload.value as { sdp: string }).sdp });
        for (const c of pendingIce.splice(0)) await pc.addIceCandidate(c);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        await this.send({ case: "signal", value: { toParticipantId: from, payload: { case: "answer", value: { sdp: answer.sdp ?? "" } } } });
      } else if (payload.case === "answer") {
        const peer = this.peers.get(from);
        if (!peer) return;
        await peer.pc.setRemoteDescription({ type: "answer", sdp: (payload.value as { sdp: string }).sdp });
        for (const c of peer.pendingIce.splice(0)) await peer.pc.addIceCandidate(c);
      } else if (payload.case === "iceCandidate") {
        const v = payload.value as { candidate: string; sdpMid: string; sdpMlineIndex: number };
        const c: RTCIceCandidateInit = { candidate: v.candidate, sdpMid: v.sdpMid, sdpMLineIndex: v.sdpMlineIndex };
        const peer = this.peer(from);
        if (peer.pc.remoteDescription) await peer.pc.addIceCandidate(c);
        else if (peer.pendingIce.length < MAX_PENDING_ICE) peer.pendingIce.push(c);
      }
    } catch (e) {
      console.warn("signal", e);
    }
  }

  private tile(stream: MediaStream, label: string, mine: boolean): { tile: HTMLElement; video: HTMLVideoElement } {
    const video = h("video", { autoplay: true, playsinline: true, muted: mine, "aria-label": `${label}'s video` });
    video.muted = mine;
    video.srcObject = stream;
    const tile = h("figure", { class: mine ? "tile mine" : "tile" }, video, h("figcaption", { text: label }));
    return { tile, video };
  }

  private setAudio(on: boolean): void {
    this.audioOn = on;
    for (const t of this.local.getAudioTracks()) t.enabled = on;
    this.sendMedia();
    this.renderControls();
  }

  private setVideo(on: boolean): void {
    this.videoOn = on;
    for (const t of this.local.getVideoTracks()) t.enabled = on;
    this.sendMedia();
    this.renderControls();
  }

  private async toggleScreen(): Promise<void> {
    if (this.screen) {
      for (const t of this.screen.getTracks()) t.stop();
      this.screen = null;
      await this.replaceVideo(this.local.getVideoTracks()[0] ?? null);
    } else {
      try {
        this.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
      } catch {
        return;
      }
      const track = this.screen.getVideoTracks()[0];
      track.addEventListener("ended", () => void this.toggleScreen());
      await this.replaceVideo(track);
    }
    this.sendMedia();
    this.renderControls();
  }

  /** Sends `track` as this page's video to every peer (a receive-only
   *  video line starts sending, and the peer is offered again). */
  private async replaceVideo(track: MediaStreamTrack | null): Promise<void> {
    for (const [id, { pc }] of this.peers) {
      try {
        const video = pc.getTransceivers().find((t) => t.receiver.track.kind === "video");
        if (!video) continue;
        await video.sender.replaceTrack(track);
        if (track && video.direction === "recvonly") {
          video.direction = "sendrecv";
          await this.offer(id);
        }
      } catch (e) {
        console.warn("replace video", e);
      }
    }
  }

  private sendMedia(): void {
    void this.send({
      case: "mediaState",
      value: { audioEnabled: this.audioOn && this.local.getAudioTracks().length > 0, videoEnabled: this.videoOn && this.local.getVideoTracks().length > 0, screenSharing: !!this.screen },
    });
  }

  // ---- people, lobby, host controls -----------------------------------

  private renderPeople(): void {
    const list = [...this.participants.values()];
    const hands = list.filter((p) => p.handRaiseTime).sort((a, b) => Number(a.handRaiseTime!.seconds - b.handRaiseTime!.seconds) || a.handRaiseTime!.nanos - b.handRaiseTime!.nanos);
    const order = new Map(hands.map((p, i) => [p.participantId, i + 1]));
    this.people.replaceChildren(
      ...list.map((p) => {
        const role = p.role === ParticipantRole.HOST ? "host" : p.role === ParticipantRole.CO_HOST ? "co-host" : "";
        const media = p.mediaState;
        const bits = [
          role,
          media && !media.audioEnabled ? "muted" : "",
          media && !media.videoEnabled ? "camera off" : "",
          media?.screenSharing ? "sharing screen" : "",
          order.has(p.participantId) ? `hand raised (#${order.get(p.participantId)})` : "",
        ].filter(Boolean);
        const item = h(
          "li",
          { "data-participant": p.participantId },
          h("span", { class: "name", text: p.displayName + (p.participantId === this.participantId ? " (you)" : "") }),
          bits.length ? h("span", { class: "meta", text: ` — ${bits.join(", ")}` }) : null,
        );
        if (this.runs() && p.participantId !== this.participantId) {
          if (p.handRaiseTime) {
            item.append(h("button", { type: "button", onclick: () => void this.send({ case: "lowerHand", value: { participantId: p.participantId } }), text: `Lower ${p.displayName}'s hand` }));
          }
          if (p.role !== ParticipantRole.HOST) {
            item.append(h("button", { type: "button", class: "danger", onclick: () => void this.remove(p.participantId), text: `Remove ${p.displayName}` }));
          }
        }
        return item;
      }),
    );
    for (const [id, peer] of this.peers) {
      const name = this.participants.get(id)?.displayName;
      const caption = peer.tile.querySelector("figcaption");
      if (name && caption) caption.textContent = name;
    }
  }

  private renderLobby(waiters: Participant[]): void {
    this.lobby.hidden = waiters.length === 0;
    const list = this.lobby.querySelector("ul")!;
    list.replaceChildren(
      ...waiters.map((w) =>
        h(
          "li",
          {},
          h("span", { text: w.displayName }),
          " ",
          h("button", { type: "button", onclick: () => void this.decide(w.participantId, true), text: `Admit ${w.displayName}` }),
          h("button", { type: "button", onclick: () => void this.decide(w.participantId, false), text: `Deny ${w.displayName}` }),
        ),
      ),
    );
  }

  private async decide(participantId: string, admit: boolean): Promise<void> {
    try {
      const req = { meetingId: this.meeting.id, participantId };
      if (admit) await api.authed(() => api.rooms.admitParticipant(req));
      else await api.authed(() => api.rooms.denyParticipant(req));
    } catch (e) {
      this.line.textContent = api.describe(e);
    }
  }

  private async remove(participantId: string): Promise<void> {
    try {
      await api.authed(() => api.rooms.removeParticipant({ meetingId: this.meeting.id, participantId }));
    } catch (e) {
      this.line.textContent = api.describe(e);
    }
  }

  private async setLocked(locked: boolean): Promise<void> {
    try {
      this.meeting = await api.authed(() => api.meetings.updateMeeting({ meeting: { id: this.meeting.id, locked }, updateMask: { paths: ["locked"] } }));
      this.renderControls();
    } catch (e) {
      this.line.textContent = api.describe(e);
    }
  }

  private async endMeeting(): Promise<void> {
    try {
      if (this.meeting.status === MeetingStatus.SCHEDULED) await api.authed(() => api.meetings.startMeeting({ meetingId: this.meeting.id }));
      await api.authed(() => api.meetings.endMeeting({ meetingId: this.meeting.id }));
    } catch (e) {
      this.line.textContent = api.describe(e);
    }
  }

  // ---- chat -------------------------------------------------------------

  private async loadChat(): Promise<void> {
    try {
      const res = await api.authed(() => api.chat.listMessages({ meetingId: this.meeting.id, pageSize: 50 }));
      for (const m of [...res.messages].reverse()) this.showChat(m);
    } catch {
      // History is a courtesy: live chat still works.
    }
  }

  private showChat(m: ChatMessage): void {
    if (this.chatIds.has(m.id)) return;
    this.chatIds.add(m.id);
    const at = m.createTime ? timestampDate(m.createTime).toLocaleTimeString() : "";
    const item = h("li", { "data-sequence": String(m.sequence) }, h("span", { class: "from", text: m.senderDisplayName }), h("time", { text: ` ${at} ` }), h("span", { class: "text", text: m.text }));
    // Keep sequence order even when history and live events interleave.
    const after = [...this.messages.children].find((li) => BigInt((li as HTMLElement).dataset.sequence ?? "0") > m.sequence);
    this.messages.insertBefore(item, after ?? null);
    for (const [id, p] of this.participants) if (p.userId === m.senderId) this.typers.delete(id);
    this.renderTyping();
  }

  private async sendChat(text: string): Promise<void> {
    clearTimeout(this.typingTimer);
    this.typingSent = false;
    await this.send({ case: "chat", value: { text, clientMessageId: crypto.randomUUID() } });
  }

  private typing(): void {
    if (!this.typingSent) {
      this.typingSent = true;
      void this.send({ case: "typing", value: { isTyping: true } });
    }
    clearTimeout(this.typingTimer);
    this.typingTimer = window.setTimeout(() => {
      this.typingSent = false;
      void this.send({ case: "typing", value: { isTyping: false } });
    }, 3000);
  }

  private renderTyping(): void {
    const now = Date.now();
    for (const [id, at] of this.typers) if (now - at > 6000) this.typers.delete(id);
    const names = [...this.typers.keys()].map((id) => this.participants.get(id)?.displayName ?? "Someone");
    this.typingLine.textContent = names.length ? `${names.join(", ")} ${names.length === 1 ? "is" : "are"} typing…` : "";
  }

  // ---- files --------------------------------------------------------------

  private async loadFiles(): Promise<void> {
    try {
      const res = await api.authed(() => api.files.listFiles({ meetingId: this.meeting.id }));
      for (const f of res.files) this.showFile(f);
    } catch {
      // The list is a courtesy.
    }
  }

  private showFile(f: SharedFile): void {
    if (this.fileList.querySelector(`[data-file="${CSS.escape(f.id)}"]`)) return;
    this.fileList.prepend(
      h(
        "li",
        { "data-file": f.id },
        h("span", { class: "filename", text: f.filename }),
        ` (${Number(f.sizeBytes).toLocaleString()} bytes) `,
        h("button", { type: "button", onclick: () => void this.download(f), text: `Download ${f.filename}` }),
      ),
    );
  }

  private async upload(file: File, progress: HTMLProgressElement): Promise<void> {
    progress.hidden = false;
    progress.value = 0;
    try {
      const created = await api.authed(() =>
        api.files.createUpload({
          metadata: { meetingId: this.meeting.id, filename: file.name, contentType: file.type, sizeBytes: BigInt(file.size) },
        }),
      );
      let offset = Number(created.receivedBytes);
      while (offset < file.size) {
        const data = new Uint8Array(await file.slice(offset, offset + CHUNK).arrayBuffer());
        let tries = 0;
        for (;;) {
          try {
            const up = await api.authed(() => api.files.uploadChunk({ uploadId: created.uploadId, offset: BigInt(offset), data }));
            if (Number(up.receivedBytes) <= offset) throw new Error("the upload did not advance");
            offset = Number(up.receivedBytes);
            break;
          } catch (e) {
            // A blip: send the chunk again (the server acknowledges a
            // chunk it already has).
            if (++tries > 5 || api.code(e) === api.Code.InvalidArgument) throw e;
            await new Promise((r) => setTimeout(r, 500 * tries));
          }
        }
        progress.value = Math.round((offset / Math.max(file.size, 1)) * 100);
      }
      const stored = await api.authed(() => api.files.completeUpload({ uploadId: created.uploadId }));
      progress.value = 100;
      this.showFile(stored);
      await this.send({ case: "chat", value: { text: `${FILE_NOTICE}${stored.filename}`, clientMessageId: crypto.randomUUID() } });
    } catch (e) {
      this.line.textContent = api.describe(e);
    } finally {
      setTimeout(() => (progress.hidden = true), 1500);
    }
  }

  private async download(f: SharedFile): Promise<void> {
    try {
      const parts = await api.authed(async () => {
        const got: Uint8Array[] = [];
        for await (const msg of api.files.downloadFile({ fileId: f.id })) {
          if (msg.data.case === "chunk") got.push(msg.data.value);
        }
        return got;
      });
      // Saved, never shown: whatever the bytes claim to be.
      const url = URL.createObjectURL(new Blob(parts as BlobPart[], { type: "application/octet-stream" }));
      const a = h("a", { href: url, download: f.filename, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (e) {
      this.line.textContent = api.describe(e);
    }
  }

  // ---- leaving ----------------------------------------------------------

  private stop(): void {
    this.done = true;
    clearInterval(this.pinger);
    this.stream?.abort();
    for (const id of [...this.peers.keys()]) this.dropPeer(id);
    for (const t of this.local.getTracks()) t.stop();
    this.screen?.getTracks().forEach((t) => t.stop());
  }

  private leave(): Promise<void> {
    if (this.done || !this.sessionId) return Promise.resolve();
    const sent = this.send({ case: "leave", value: {} });
    this.stop();
    return sent;
  }

  private async leaveAndGo(): Promise<void> {
    // The room hears the leave before the page goes (or after a second).
    await Promise.race([this.leave(), new Promise((r) => setTimeout(r, 1000))]);
    location.assign("/");
  }

  private end(message: string): void {
    this.stop();
    show(h("h1", { class: "ended", text: "You are no longer in this meeting" }), h("p", { role: "alert", text: message }), h("p", {}, h("a", { href: "/", text: "Back to your meetings" })));
  }
}

export type { ClientEvent };
