//! `kiln delete`: deletes one object.

use kiln_proto::v1::DeleteRequest;

use crate::Kind;
use crate::connection::{Client, status};

pub async fn run(c: &mut Client, kind: Kind, name: String) -> anyhow::Result<()> {
    c.delete(DeleteRequest { kind: kind.as_str().into(), name: name.clone() }).await.map_err(status)?;
    println!("{}/{name} deleted", kind.as_str());
    Ok(())
}
