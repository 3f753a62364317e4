// Package bridge mirrors chosen commy services across hosts through NATS
// JetStream.
//
// A Bridge is a client of its host's broker (through the client SDK, with
// whatever rights the broker's policy gives its uid) and of a NATS cluster.
// It publishes every change it sees in a federated service as one stream
// message per batch, and applies the messages of other hosts through the
// broker in stream order, so that every host settles on the value JetStream
// ordered last for each variable. docs/federation.md states the semantics.
package bridge
