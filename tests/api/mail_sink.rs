//! A small SMTP server on loopback that keeps every mail it is given. Every
//! test server sends its mail here (verification links, invitations), so
//! tests read links exactly as a user would from their mailbox.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

/// One accepted mail: the recipient and the raw message.
#[derive(Debug, Clone)]
pub struct Received {
    pub to: String,
    pub data: String,
}

impl Received {
    pub fn subject_is(&self, subject: &str) -> bool {
        self.data.contains(&format!("Subject: {subject}"))
    }

    pub fn is_verification(&self) -> bool {
        self.subject_is("Verify your email address")
    }

    /// The body with quoted-printable soft breaks and escapes undone.
    pub fn text(&self) -> String {
        let joined = self.data.replace("=\n", "");
        let mut out = String::with_capacity(joined.len());
        let mut rest = joined.as_str();
        while let Some(at) = rest.find('=') {
            out.push_str(&rest[..at]);
            let hex = rest.get(at + 1..at + 3).unwrap_or("");
            match u8::from_str_radix(hex, 16) {
                Ok(byte) if hex.len() == 2 => {
                    out.push(byte as char);
                    rest = &rest[at + 3..];
                }
                _ => {
                    out.push('=');
                    rest = &rest[at + 1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// The token of the verification link in this mail.
    pub fn verification_token(&self) -> Option<String> {
        let text = self.text();
        let at = text.find("/verify?token=")? + "/verify?token=".len();
        Some(
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                .collect(),
        )
    }
}

/// An SMTP server that accepts everything, except that it refuses the
/// next messages with a temporary error when told to.
pub struct SmtpSink {
    pub addr: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<Mutex<usize>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(Mutex::new(0usize));
        let refused = refuse.clone();
        let store = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let refused = refused.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut lines = BufReader::new(read).lines();
                    let _ = write.write_all(b"220 sink ESMTP\r\n").await;
                    let mut to = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let command = line.to_ascii_uppercase();
                        let reply: &[u8] =
                            if command.starts_with("EHLO") || command.starts_with("HELO") {
                                b"250 sink\r\n"
                            } else if command.starts_with("RCPT TO:") {
                                to = line[8..].trim().trim_matches(['<', '>']).to_owned();
                                b"250 OK\r\n"
                            } else if command.starts_with("DATA") {
                                let refuse_this = {
                                    let mut left = refused.lock().unwrap();
                                    let refuse = *left > 0;
                                    *left = left.saturating_sub(1);
                                    refuse
                                };
                                if refuse_this {
                                    b"451 try again later\r\n"
                                } else {
                                    let _ = write.write_all(b"354 go ahead\r\n").await;
                                    let mut data = String::new();
                                    while let Ok(Some(body)) = lines.next_line().await {
                                        if body == "." {
                                            break;
                                        }
                                        data.push_str(&body);
                                        data.push('\n');
                                    }
                                    store.lock().unwrap().push(Received {
                                        to: to.clone(),
                                        data,
                                    });
                                    b"250 queued\r\n"
                                }
                            } else if command.starts_with("QUIT") {
                                let _ = write.write_all(b"221 bye\r\n").await;
                                return;
                            } else {
                                b"250 OK\r\n"
                            };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            received,
            refuse,
        }
    }

    /// Refuses the next `count` messages with `451 try again later`.
    pub fn refuse_next(&self, count: usize) {
        *self.refuse.lock().unwrap() = count;
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Mails other than verification links.
    pub fn others(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|m| !m.is_verification())
            .collect()
    }

    /// Waits until `count` mails other than verification links arrived,
    /// and returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..100 {
            let got = self.others();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {count} emails, got {:?}", self.all());
    }

    /// Waits for the `nth` (from 1) verification mail to `to`.
    pub async fn verification_mail(&self, to: &str, nth: usize) -> Received {
        for _ in 0..200 {
            let found: Vec<Received> = self
                .all()
                .into_iter()
                .filter(|m| m.to.eq_ignore_ascii_case(to) && m.is_verification())
                .collect();
            if found.len() >= nth {
                return found[nth - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no verification mail #{nth} to {to}: {:?}", self.all());
    }
}
