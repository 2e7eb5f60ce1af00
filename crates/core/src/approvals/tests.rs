use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::identity::ManualClock;

fn who(user: &str, groups: &[&str], actor: Option<&str>) -> Identity {
    Identity {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        actor: actor.map(str::to_owned),
        method: "test",
        credential: Default::default(),
    }
}

fn ask(identity: Identity, statement: &str, rule: &str, approvals: Option<&str>) -> ReviewAsk {
    ReviewAsk {
        identity,
        session_id: Some("s1".into()),
        connection: "app-db".into(),
        protocol: "postgres".into(),
        action: "delete on app-db/public.people".into(),
        policies: vec!["writes".into()],
        rules: vec![ReviewRule::from_annotations("writes", rule, approvals, None).unwrap()],
        statement: statement.into(),
        params: vec![],
        hash: statement_hash(statement, &[]),
        reason: None,
    }
}

fn board(clock: Arc<ManualClock>, store: Arc<MemoryReviewStore>) -> ReviewBoard {
    let board = ReviewBoard::in_memory(clock, ReviewSettings::default());
    ReviewBoard { store, ..board }
}

async fn open(board: &ReviewBoard, a: ReviewAsk) -> u64 {
    match board.submit(a).await.unwrap() {
        Submission::Waiting { review, .. } => review.id,
        Submission::Approved(_) => panic!("nothing was approved yet"),
    }
}

#[tokio::test]
async fn nobody_decides_their_own_request() {
    let clock = Arc::new(ManualClock::at(1000));
    let b = board(clock, Arc::default());
    let alice = who("alice", &["dba"], None);
    let id = open(&b, ask(alice.clone(), "delete from people", "dba", None)).await;
    // The requester, an admin or not.
    let e = b.decide(id, &alice, true, None).await.unwrap_err();
    assert!(matches!(e, ReviewError::OwnRequest { .. }), "{e}");
    // An agent acting for the requester.
    let agent = who("alice", &["dba"], Some("bot"));
    assert!(matches!(
        b.decide(id, &agent, true, None).await.unwrap_err(),
        ReviewError::OwnRequest { .. }
    ));
    // The agent the request came through, acting for someone else.
    let by_agent = open(&b, ask(agent.clone(), "drop table t", "dba", None)).await;
    let bot_for_bob = who("bob", &["dba"], Some("bot"));
    assert!(matches!(
        b.decide(by_agent, &bot_for_bob, true, None)
            .await
            .unwrap_err(),
        ReviewError::OwnRequest { .. }
    ));
    // Someone outside the reviewing group.
    let dev = who("carol", &["dev"], None);
    assert!(matches!(
        b.decide(id, &dev, true, None).await.unwrap_err(),
        ReviewError::NotAReviewer { .. }
    ));
    // A reviewer.
    let dba = who("dan", &["dba"], None);
    let r = b.decide(id, &dba, true, Some("ok".into())).await.unwrap();
    assert_eq!(r.status, ReviewStatus::Approved);
}

#[tokio::test]
async fn two_approvals_from_two_people() {
    let b = board(Arc::new(ManualClock::at(1000)), Arc::default());
    let id = open(
        &b,
        ask(
            who("alice", &[], None),
            "delete from people",
            "dba",
            Some("2"),
        ),
    )
    .await;
    let dan = who("dan", &["dba"], None);
    assert_eq!(
        b.decide(id, &dan, true, None).await.unwrap().status,
        ReviewStatus::Pending
    );
    assert!(matches!(
        b.decide(id, &dan, true, None).await.unwrap_err(),
        ReviewError::AlreadyApproved { .. }
    ));
    let eve = who("eve", &["dba"], None);
    assert_eq!(
        b.decide(id, &eve, true, None).await.unwrap().status,
        ReviewStatus::Approved
    );
}

#[tokio::test]
async fn an_approval_runs_the_same_statement_once() {
    let b = board(Arc::new(ManualClock::at(1000)), Arc::default());
    let alice = who("alice", &[], None);
    let id = open(&b, ask(alice.clone(), "delete from people", "dba", None)).await;
    // The same statement again joins the pending review.
    assert_eq!(
        open(&b, ask(alice.clone(), "delete from people", "dba", None)).await,
        id
    );
    b.decide(id, &who("dan", &["dba"], None), true, None)
        .await
        .unwrap();
    // Another statement, or another requester, does not use it.
    let other = open(
        &b,
        ask(alice.clone(), "delete from people where true", "dba", None),
    )
    .await;
    assert_ne!(other, id);
    let bob = open(
        &b,
        ask(who("bob", &[], None), "delete from people", "dba", None),
    )
    .await;
    assert_ne!(bob, id);
    match b
        .submit(ask(alice.clone(), "delete from people", "dba", None))
        .await
        .unwrap()
    {
        Submission::Approved(a) => assert_eq!(a.review(), id),
        other => panic!("{other:?}"),
    }
    // Used: the next run asks again.
    let again = open(&b, ask(alice, "delete from people", "dba", None)).await;
    assert!(again > bob);
}

#[tokio::test]
async fn a_waiter_gets_the_decision() {
    let b = Arc::new(board(Arc::new(ManualClock::at(1000)), Arc::default()));
    let id = open(
        &b,
        ask(who("alice", &[], None), "delete from people", "dba", None),
    )
    .await;
    assert!(matches!(
        b.wait(id, Duration::from_millis(10)).await,
        Outcome::Pending
    ));
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.wait(id, Duration::from_secs(30)).await }
    });
    b.decide(
        id,
        &who("dan", &["dba"], None),
        false,
        Some("not today".into()),
    )
    .await
    .unwrap();
    match waiter.await.unwrap() {
        Outcome::Denied { by, reason } => {
            assert_eq!((by.as_str(), reason.as_deref()), ("dan", Some("not today")))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.decide(id, &who("eve", &["dba"], None), true, None)
            .await
            .unwrap_err(),
        ReviewError::Closed(_, "denied")
    ));
}

#[tokio::test]
async fn stale_reviews_and_unused_approvals_expire() {
    let clock = Arc::new(ManualClock::at(1000));
    let b = board(clock.clone(), Arc::default());
    let alice = who("alice", &[], None);
    let id = open(&b, ask(alice.clone(), "delete from people", "dba", None)).await;
    clock.advance(3601);
    assert!(matches!(
        b.decide(id, &who("dan", &["dba"], None), true, None)
            .await
            .unwrap_err(),
        ReviewError::Closed(_, "expired")
    ));
    let id = open(&b, ask(alice.clone(), "delete from people", "dba", None)).await;
    b.decide(id, &who("dan", &["dba"], None), true, None)
        .await
        .unwrap();
    clock.advance(601);
    let next = open(&b, ask(alice, "delete from people", "dba", None)).await;
    assert_ne!(next, id);
    assert_eq!(
        b.get(id).await.unwrap().unwrap().status,
        ReviewStatus::Expired
    );
}

#[tokio::test]
async fn reviews_survive_a_restart() {
    let clock = Arc::new(ManualClock::at(1000));
    let store = Arc::new(MemoryReviewStore::default());
    let first = board(clock.clone(), store.clone());
    let alice = who("alice", &[], None);
    let id = open(
        &first,
        ask(alice.clone(), "delete from people", "dba", None),
    )
    .await;
    drop(first);
    let second = ReviewBoard::load(store, clock, ReviewSettings::default())
        .await
        .unwrap();
    assert_eq!(second.open().len(), 1);
    second
        .decide(id, &who("dan", &["dba"], None), true, None)
        .await
        .unwrap();
    assert!(matches!(
        second
            .submit(ask(alice.clone(), "delete from people", "dba", None))
            .await
            .unwrap(),
        Submission::Approved(_)
    ));
    // Ids keep counting.
    assert_eq!(open(&second, ask(alice, "x", "dba", None)).await, id + 1);
}

#[tokio::test]
async fn a_grant_counts_from_its_approval_until_its_end() {
    let clock = Arc::new(ManualClock::at(1000));
    let grants = Arc::new(crate::grants::GrantTable::with_clock(clock.clone()));
    let b = board(clock.clone(), Arc::default()).with_grants(grants.clone());
    let alice = who("alice", &[], None);
    let terms = GrantTerms {
        role: "dba".into(),
        duration_secs: 1800,
    };
    let asked = b
        .request_grant(ask(alice.clone(), "grant dba", "dba", None), terms.clone())
        .await
        .unwrap();
    assert!(grants.roles(&alice, "app-db").is_empty());
    // Approved later: the window counts from the approval.
    clock.advance(600);
    assert!(matches!(
        b.decide(asked.id, &alice, true, None).await.unwrap_err(),
        ReviewError::OwnRequest { .. }
    ));
    let r = b
        .decide(asked.id, &who("dan", &["dba"], None), true, None)
        .await
        .unwrap();
    assert_eq!(r.approval_expires_at, Some(1600 + 1800));
    assert_eq!(grants.roles(&alice, "app-db"), ["dba"]);
    // A statement of the same text never rides on a grant's approval.
    assert!(matches!(
        b.submit(ask(alice.clone(), "grant dba", "dba", None))
            .await
            .unwrap(),
        Submission::Waiting { .. }
    ));
    clock.advance(1800);
    assert!(grants.roles(&alice, "app-db").is_empty());
    b.sweep().await.unwrap();
    let ended = b.get(asked.id).await.unwrap().unwrap();
    assert_eq!(ended.status, ReviewStatus::Expired);
    assert_eq!(ended.end_note.as_deref(), Some("grant ended"));
    // Revoked early.
    let again = b
        .request_grant(ask(alice.clone(), "grant dba", "dba", None), terms)
        .await
        .unwrap();
    b.decide(again.id, &who("dan", &["dba"], None), true, None)
        .await
        .unwrap();
    assert_eq!(grants.roles(&alice, "app-db"), ["dba"]);
    b.revoke(again.id, "dan").await.unwrap();
    assert!(grants.roles(&alice, "app-db").is_empty());
}

#[tokio::test]
async fn one_requester_has_at_most_twenty_reviews_open() {
    let b = board(Arc::new(ManualClock::at(1000)), Arc::default());
    let alice = who("alice", &[], None);
    for i in 0..MAX_OPEN_PER_REQUESTER {
        open(
            &b,
            ask(alice.clone(), &format!("delete from t{i}"), "dba", None),
        )
        .await;
    }
    let e = b
        .submit(ask(alice.clone(), "delete from one_more", "dba", None))
        .await
        .unwrap_err();
    assert!(matches!(e, ReviewError::TooMany { open: 20, .. }), "{e}");
    // Another requester is not held up.
    open(&b, ask(who("bob", &[], None), "delete from t", "dba", None)).await;
}
