//! Layer stacks: which OSCORE layers a message carried, in which order, with the state each
//! needs for the responses (CP §2.5, §2.6).

use hopcore_oscore::RequestBinding;

/// One layer removed from an incoming request (server side: a hop that is the consumer of
/// that layer).
#[derive(Debug)]
pub struct RemovedLayer<Id> {
    pub context: Id,
    /// The identity of the peer that applied the layer.
    pub label: String,
    pub binding: RequestBinding,
}

/// The layers removed from an incoming request, outermost first. A response to it is protected
/// with the same layers in reverse order (CP §2.5): the last removed is applied first.
#[derive(Debug)]
pub struct ServerStack<Id> {
    pub layers: Vec<RemovedLayer<Id>>,
}

impl<Id> Default for ServerStack<Id> {
    fn default() -> Self {
        ServerStack { layers: Vec::new() }
    }
}

impl<Id: Copy> ServerStack<Id> {
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
    /// The identities of the layers, outermost first, e.g. for logs and authorization.
    pub fn labels(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.label.clone()).collect()
    }
    /// The identity of the innermost layer: the end-to-end peer as seen by the application.
    pub fn innermost_label(&self) -> Option<&str> {
        self.layers.last().map(|l| l.label.as_str())
    }
}

/// One layer applied to an outgoing request (client side).
#[derive(Debug)]
pub struct AppliedLayer<Id> {
    pub context: Id,
    pub label: String,
    pub binding: RequestBinding,
}

/// The layers a client applied to a request, in application order (the first is the
/// innermost, e.g. the end-to-end layer). Responses are verified outermost first (CP §2.6).
#[derive(Debug)]
pub struct ClientStack<Id> {
    pub layers: Vec<AppliedLayer<Id>>,
    /// The request already carried an OSCORE layer that is not ours (a proxy forwarding a
    /// client's end-to-end-protected request over a protected leg).
    pub inner_oscore: bool,
}

impl<Id> Default for ClientStack<Id> {
    fn default() -> Self {
        ClientStack { layers: Vec::new(), inner_oscore: false }
    }
}

impl<Id: Copy> ClientStack<Id> {
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
    pub fn labels(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.label.clone()).collect()
    }
}
