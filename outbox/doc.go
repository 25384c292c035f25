// Package outbox sends cartreg's outbound notifications (coordinators' digests, FHIR R4
// Subscription rest-hook notifications) to webhooks and by e-mail, durably.
//
// # Queue
//
// Enqueue writes a message into delivery_message in the caller's transaction, so a
// notification exists exactly when the write that caused it commits. Each message carries an
// idempotency key; enqueueing a key that is already there does nothing, so a job that runs
// twice, or on two replicas, queues one message.
//
// # Delivery
//
// A Deliverer's DeliverDue makes one pass over the due messages. It claims them one at a time,
// each in a short transaction of its own that holds the message's row lock (SELECT … FOR
// UPDATE SKIP LOCKED) while it sends and until the outcome is recorded. Another replica's pass
// skips locked rows and goes on with other messages, so no two replicas send the same message
// at the same time; a replica that dies mid-send drops its connection and with it the lock, and
// the message is due again at once. Row locks were chosen over leases (a leased_until column)
// because they need no clock agreement between replicas nor a lease length to tune against the
// send timeout, and the attempt, its outcome and the unlock commit together. The cost, one pool
// connection held idle in a transaction per send in flight, is bounded by the send timeout
// (the HTTP client's, 10 s by default; SMTPConfig.Timeout for e-mail) and, as a Deliverer
// sends one message at a time, is one connection per replica.
//
// Delivery is at least once: a send that succeeds and whose outcome cannot then be recorded
// is repeated. Webhooks get the key in an X-Cartreg-Delivery header and e-mails a Message-ID
// derived from it, so receivers can drop repeats.
//
// # Retries
//
// Every attempt is recorded in delivery_attempt. A failed attempt is retried with exponential
// back-off: after the n-th failure the delay is InitialBackoff·2^(n-1), capped at MaxBackoff,
// then jittered to a random point in its upper half so that messages that failed together do
// not come back together. A retry library does not fit: the retry state must live in
// PostgreSQL, to survive restarts and be shared by the replicas, so the delay is computed from
// the stored attempt count. A message still failing GiveUpAfter after it was enqueued gets one
// last attempt then and, failing that, is marked failed: it stays listed, with its last error,
// and is not retried.
//
// All failures are retried alike, 4xx answers included: a receiver that rejects us (401 after
// a key rotation, 404 during a redeploy) is usually misconfigured for a while, not for good,
// and the give-up period bounds the cost. Redirects are not followed (a 3xx is a failure):
// http.Client would turn a redirected POST into a GET and call that a delivery.
//
// # Where Subscription notifications may go
//
// A digest's target is the administrator's setting; a FHIR Subscription's is an API client's
// choice, so messages of KindSubscription are sent only within Config.SubscriptionEndpoints
// (an AllowList), checked when each is sent, not only when the Subscription was accepted: the
// list may have shrunk since. Their connections are made by a dialer that refuses loopback,
// private, link-local and other non-public addresses unless the list names them as addresses,
// so a listed host name whose DNS is pointed inside the network reaches nothing there, and
// through no proxy. A target off the list fails at once; a refused address fails the attempt,
// which is retried like any other, since DNS may change back.
//
// Times come from the injected clock, never the database's now(), so tests can simulate
// hours. Message bodies carry patient data and headers may carry credentials: neither is ever
// logged nor listed; logs name the key, kind, target host, status and attempt.
package outbox
