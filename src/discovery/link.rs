//! kapell's own network link, `kapell-dns`: what systemd-resolved attaches the `~kapell` route
//! to (see [`super::resolved`]).
//!
//! resolved serves a link's DNS servers only while the link is up, has carrier and holds an
//! address of global scope. The link is one end of a veth pair, since veth is in every kernel
//! Docker runs on (a dummy link is a module some kernels lack) and one end has carrier while the
//! other is up. It holds the responder's own address with global scope: resolved sends its
//! queries out of the link, and the kernel delivers them locally, to the responder.
//! Nothing is routed through the pair; no packet ever leaves the host by it.

use anyhow::{Context, Result};
use futures_util::TryStreamExt as _;
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use std::net::IpAddr;

/// The link resolved routes `~kapell` through, and the other end of its pair.
pub const NAME: &str = "kapell-dns";
pub const PEER: &str = "kapell-dns-peer";

/// Creates the pair afresh (a pair left by a killed responder goes first, with whatever
/// resolved had kept for it), brings both ends up and gives [`NAME`] `address`. Returns the
/// interface indexes of [`NAME`] and [`PEER`].
pub async fn create(address: IpAddr) -> Result<(u32, u32)> {
    with_handle(|handle| async move {
        if let Some(index) = index_of(&handle, NAME).await? {
            handle.link().del(index).execute().await.with_context(|| format!("cannot delete the old link {NAME}"))?;
        }
        handle
            .link()
            .add(LinkVeth::new(NAME, PEER).build())
            .execute()
            .await
            .with_context(|| format!("cannot create the link {NAME} (a veth pair)"))?;
        let index = index_of(&handle, NAME).await?.with_context(|| format!("the link {NAME} vanished"))?;
        let peer = index_of(&handle, PEER).await?.with_context(|| format!("the link {PEER} vanished"))?;
        for (name, i) in [(PEER, peer), (NAME, index)] {
            handle
                .link()
                .set(LinkUnspec::new_with_index(i).up().build())
                .execute()
                .await
                .with_context(|| format!("cannot bring {name} up"))?;
        }
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        handle
            .address()
            .add(index, address, prefix)
            .replace()
            .execute()
            .await
            .with_context(|| format!("cannot give {NAME} the address {address}"))?;
        Ok((index, peer))
    })
    .await
}

/// Deletes the pair (both ends go together); nothing to do when it is not there.
pub async fn delete() -> Result<()> {
    with_handle(|handle| async move {
        if let Some(index) = index_of(&handle, NAME).await? {
            handle.link().del(index).execute().await.with_context(|| format!("cannot delete the link {NAME}"))?;
        }
        Ok(())
    })
    .await
}

/// Runs `work` over a netlink connection of its own, closed afterwards.
async fn with_handle<F, Fut, T>(work: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let (connection, handle, _) = rtnetlink::new_connection().context("cannot open a netlink socket")?;
    let connection = tokio::spawn(connection);
    let result = work(handle).await;
    connection.abort();
    result
}

async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    match handle.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -nix::libc::ENODEV => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot look up the link {name}")),
    }
}
