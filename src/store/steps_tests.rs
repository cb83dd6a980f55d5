//! The shared transaction steps, each run alone against a real SQLite file.

use super::{Db, Tx, accounts, in_tx, invites, mail, notifications, users, verifications};
use crate::domain::{AuthProvider, Role, new_id, notification::Draft};

async fn db() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let db = Db::connect(&url, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

/// Creates an account; verified ones through `upsert_admin`.
async fn account(db: &Db, email: &str, verified: bool) -> String {
    let id = new_id();
    let user = users::NewUser {
        id: &id,
        email,
        email_key: email,
        display_name: email,
        password_hash: Some("x"),
        role: Role::User,
        provider: AuthProvider::Password,
        now: 1,
    };
    if verified {
        return accounts::upsert_admin(db, &user).await.unwrap().0.id;
    }
    let session = super::sessions::NewSession {
        id: &new_id(),
        refresh_hash: &new_id(),
        refresh_expires_at: 10,
        now: 1,
    };
    accounts::create_with_session(db, &user, None, &session)
        .await
        .unwrap()
        .unwrap();
    id
}

async fn meeting(db: &Db, host_id: &str) -> String {
    let id = new_id();
    let mut tx = db.begin().await.unwrap();
    in_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO meetings (id, host_id, title, description, start_at, duration_minutes, status, \
             join_policy, created_at, updated_at) VALUES ($1, $2, 'T', '', 5, 30, 'scheduled', 'invited_only', 1, 1)",
        )
        .bind(&id)
        .bind(host_id)
        .execute(conn)
        .await
        .unwrap();
    });
    tx.commit().await.unwrap();
    id
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    super::dispatch!(db, pool => sqlx::query_as::<_, (i64,)>(&sql).fetch_one(pool).await.unwrap().0)
}

fn invitee<'a>(id: &'a str, email: &'a str) -> invites::Invitee<'a> {
    invites::Invitee {
        id,
        email,
        email_key: email,
    }
}

#[tokio::test]
async fn a_dropped_transaction_leaves_nothing() {
    let (db, _dir) = db().await;
    let host = account(&db, "host@x.test", true).await;
    let meeting = meeting(&db, &host).await;
    let mut tx: Tx = db.begin().await.unwrap();
    let draft = Draft::invite(&meeting, "T", "Host");
    notifications::insert(&mut tx, &host, &draft, 2, None)
        .await
        .unwrap()
        .unwrap();
    mail::enqueue(&mut tx, "a@x.test", "s", "b", 2)
        .await
        .unwrap();
    drop(tx);
    assert_eq!(count(&db, "notifications").await, 0);
    assert_eq!(count(&db, "mail_outbox").await, 0);
}

#[tokio::test]
async fn a_dedupe_key_notifies_and_mails_once() {
    let (db, _dir) = db().await;
    let user = account(&db, "u@x.test", true).await;
    let meeting = meeting(&db, &user).await;
    let mut draft = Draft::invite(&meeting, "T", "Host");
    draft.mail = true;
    let mut tx = db.begin().await.unwrap();
    let first = notifications::insert(&mut tx, &user, &draft, 2, Some("k"))
        .await
        .unwrap();
    let again = notifications::insert(&mut tx, &user, &draft, 3, Some("k"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(first.is_some());
    assert!(again.is_none());
    assert_eq!(count(&db, "mail_outbox").await, 1);
}

#[tokio::test]
async fn invitations_bind_only_to_proven_addresses_and_repeat_harmlessly() {
    let (db, _dir) = db().await;
    let host = account(&db, "host@x.test", true).await;
    let proven = account(&db, "proven@x.test", true).await;
    let unproven = account(&db, "unproven@x.test", false).await;
    let meeting = meeting(&db, &host).await;
    let mut draft = Draft::invite(&meeting, "T", "Host");
    draft.mail = true;
    let (a, b, c) = (new_id(), new_id(), new_id());
    let list = [
        invitee(&a, "proven@x.test"),
        invitee(&b, "unproven@x.test"),
        invitee(&c, "stranger@x.test"),
    ];

    let mut tx = db.begin().await.unwrap();
    let (invites, notices) = invites::invite_all(&mut tx, &meeting, &list, Some(&draft), 2)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(invites.len(), 3);
    assert_eq!(invites[0].user_id.as_deref(), Some(proven.as_str()));
    assert_eq!(
        invites[1].user_id, None,
        "the squatter's address is unproven"
    );
    assert_eq!(notices.len(), 1);
    // The proven account's notice is mailed; the other two get the invite by mail.
    assert_eq!(count(&db, "mail_outbox").await, 3);

    let mut tx = db.begin().await.unwrap();
    let (again, notices) = invites::invite_all(&mut tx, &meeting, &list, Some(&draft), 3)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        again.iter().map(|i| &i.id).collect::<Vec<_>>(),
        invites.iter().map(|i| &i.id).collect::<Vec<_>>()
    );
    assert!(notices.is_empty());
    assert_eq!(count(&db, "mail_outbox").await, 3);

    // Proving the address collects the waiting invitation, once.
    let mut tx = db.begin().await.unwrap();
    let notices = verifications::mark_verified(&mut tx, &unproven, "unproven@x.test", 4)
        .await
        .unwrap();
    let repeat = invites::bind_waiting(&mut tx, &unproven, "unproven@x.test", 4)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(notices.len(), 1);
    assert!(repeat.is_empty());
    let invite = invites::find(&db, &b).await.unwrap().unwrap();
    assert_eq!(invite.user_id.as_deref(), Some(unproven.as_str()));
}

#[tokio::test]
async fn a_large_chat_batch_spans_several_statements_without_gaps() {
    use super::chat::{self, Appended, NewMessage};
    let (db, _dir) = db().await;
    let host = account(&db, "host@x.test", false).await;
    let (a, b) = (meeting(&db, &host).await, meeting(&db, &host).await);
    // 40 messages, alternating meetings: several INSERTs of 16 and a rest.
    let messages: Vec<NewMessage> = (0..40)
        .map(|i| NewMessage {
            id: new_id(),
            meeting_id: if i % 2 == 0 { a.clone() } else { b.clone() },
            sender_id: host.clone(),
            sender_display_name: "H".into(),
            text: format!("m{i}"),
            client_message_id: (i % 3 == 0).then(|| format!("c{i}")),
            file_id: None,
        })
        .collect();
    let results = chat::append_batch(&db, &messages, 2).await.unwrap();
    let mut sequences = (Vec::new(), Vec::new());
    for (message, result) in messages.iter().zip(&results) {
        let Appended::Stored(record) = result else {
            panic!("not stored: {result:?}");
        };
        assert_eq!(
            (&record.text, &record.meeting_id),
            (&message.text, &message.meeting_id)
        );
        if record.meeting_id == a {
            sequences.0.push(record.sequence);
        } else {
            sequences.1.push(record.sequence);
        }
    }
    let expected: Vec<i64> = (1..=20).collect();
    assert_eq!(sequences, (expected.clone(), expected));
    assert_eq!(count(&db, "chat_messages").await, 40);
    // Every column went where it belongs (the INSERT binds nine a row).
    let fields = |r: &chat::MessageRecord| {
        (
            r.id.clone(),
            r.meeting_id.clone(),
            r.sender_id.clone(),
            r.sender_display_name.clone(),
            r.text.clone(),
            r.sequence,
            r.client_message_id.clone(),
            r.created_at,
            r.file_id.clone(),
        )
    };
    let mut read = chat::list(&db, &a, Some(0), None, 100).await.unwrap();
    read.extend(chat::list(&db, &b, Some(0), None, 100).await.unwrap());
    let mut stored: Vec<_> = results
        .iter()
        .map(|r| match r {
            Appended::Stored(record) => fields(record),
            other => panic!("not stored: {other:?}"),
        })
        .collect();
    let mut read: Vec<_> = read.iter().map(fields).collect();
    stored.sort();
    read.sort();
    assert_eq!(read, stored);
}

/// The attendance writer (`realtime::attendance`) on a real file: changes
/// apply in the order queued, and `finish` drains them before it records
/// the departures; nothing queued after it is applied.
#[tokio::test]
async fn the_attendance_writer_applies_changes_in_order_and_drains_at_shutdown() {
    use super::participants;
    use crate::realtime::attendance::Attendance;

    let (db, _dir) = db().await;
    let host = account(&db, "host@example.com", true).await;
    let meeting = meeting(&db, &host).await;
    for id in ["a", "b", "c"] {
        participants::record_join(&db, id, &meeting, &host, 1)
            .await
            .unwrap();
    }
    let attendance = Attendance::start(db.clone());
    // a: detached, resumed, detached again; b: detached, then resumed; c
    // stays until the server stops.
    attendance.leave("a", 2);
    attendance.reopen("a");
    attendance.leave("a", 3);
    attendance.leave("b", 2);
    attendance.reopen("b");
    attendance.finish(vec!["b".into(), "c".into()], 9).await;
    attendance.leave("c", 20);
    let left: Vec<(String, Option<i64>)> = participants::list(&db, &meeting, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.id, row.left_at))
        .collect();
    assert_eq!(
        left,
        [
            ("a".to_owned(), Some(3)),
            ("b".to_owned(), Some(9)),
            ("c".to_owned(), Some(9)),
        ]
    );
}
