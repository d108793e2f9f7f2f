use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

use super::WindowSizeRef;
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// Bytes of data the application has taken from the channel since the
    /// session last looked (Ferry: the window is granted on consumption).
    pub(super) consumed: Option<Arc<AtomicU64>>,
    /// Flow-controlled channels: what the application's queue could not
    /// take yet. The session loop never waits for the application; the
    /// data here is bounded by the window the peer was given, and small
    /// packets are coalesced so their count costs nothing.
    pub(super) staged: Staged,
}

/// See [`ChannelRef::staged`].
#[derive(Debug, Default)]
pub(crate) struct Staged {
    data: BytesMut,
    eof: bool,
    close: bool,
}

impl Staged {
    fn is_empty(&self) -> bool {
        self.data.is_empty() && !self.eof && !self.close
    }
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            consumed: None,
            staged: Staged::default(),
        }
    }

    /// Flow-controlled channels: hands data to the application without
    /// waiting. Data after an EOF or CLOSE is dropped.
    pub(crate) fn deliver_data(&mut self, data: bytes::Bytes) {
        if data.is_empty() || self.staged.eof || self.staged.close {
            return;
        }
        if self.staged.is_empty() {
            match self.sender.try_send(crate::ChannelMsg::Data { data }) {
                Ok(()) => return,
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(crate::ChannelMsg::Data { data })) => {
                    self.staged.data.extend_from_slice(&data)
                }
                Err(TrySendError::Full(_)) => return,
            }
        } else {
            self.staged.data.extend_from_slice(&data);
        }
        self.flush_staged();
    }

    /// Flow-controlled channels: EOF, after the data staged before it.
    pub(crate) fn deliver_eof(&mut self) {
        self.staged.eof = true;
        self.flush_staged();
    }

    /// Moves staged data, EOF and CLOSE into the application's queue as
    /// far as it has room, in order.
    pub(crate) fn flush_staged(&mut self) {
        while !self.staged.is_empty() {
            let permit = match self.sender.try_reserve() {
                Ok(p) => p,
                Err(TrySendError::Full(())) => return,
                Err(TrySendError::Closed(())) => {
                    self.staged = Staged::default();
                    return;
                }
            };
            if !self.staged.data.is_empty() {
                let data = self.staged.data.split().freeze();
                permit.send(crate::ChannelMsg::Data { data });
            } else if self.staged.eof {
                self.staged.eof = false;
                permit.send(crate::ChannelMsg::Eof);
            } else {
                self.staged.close = false;
                permit.send(crate::ChannelMsg::Close);
            }
        }
    }

    /// Flow-controlled channels, on CHANNEL_CLOSE: the channel leaves the
    /// session, so what is staged (and the close) is handed over by a
    /// task that waits for room; it ends when the application drops the
    /// channel.
    pub(crate) fn deliver_close(mut self) {
        self.staged.close = true;
        self.flush_staged();
        if self.staged.is_empty() {
            return;
        }
        let Self { sender, staged, .. } = self;
        russh_util::runtime::spawn(async move {
            if !staged.data.is_empty() {
                let data = staged.data.freeze();
                if sender.send(crate::ChannelMsg::Data { data }).await.is_err() {
                    return;
                }
            }
            if staged.eof && sender.send(crate::ChannelMsg::Eof).await.is_err() {
                return;
            }
            let _ = sender.send(crate::ChannelMsg::Close).await;
        });
    }

    /// True when the window of this channel is granted as the application
    /// consumes its data, not as it arrives.
    pub(crate) fn is_flow_controlled(&self) -> bool {
        self.consumed.is_some()
    }

    /// Bytes consumed since the last call.
    pub(crate) fn take_consumed(&self) -> u64 {
        self.consumed
            .as_ref()
            .map_or(0, |c| c.swap(0, Ordering::AcqRel))
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
