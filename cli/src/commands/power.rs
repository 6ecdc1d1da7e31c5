//! `kiln power` and `kiln boot`: a machine's power and boot device through
//! its BMC, answered with what the BMC reports after the change.

use kiln_proto::v1::{BmcJobRequest, BootDeviceRequest, PowerRequest, VirtualMediaRequest};

use crate::connection::{Client, status};
use crate::view;

pub async fn power(c: &mut Client, action: &str, hardware: String) -> anyhow::Result<()> {
    let r = c.power(PowerRequest { hardware, action: action.to_string() }).await.map_err(status)?.into_inner();
    let read = view::time(&r.read_at).unwrap_or_else(|| "-".into());
    println!("hardware/{}: power {} (read from the BMC at {read})", r.hardware, r.power_state);
    Ok(())
}

pub async fn boot(c: &mut Client, hardware: String, device: &str, once: bool, mode: &str) -> anyhow::Result<()> {
    let request = BootDeviceRequest { hardware, device: device.to_string(), once, mode: mode.to_string() };
    let r = c.set_boot_device(request).await.map_err(status)?.into_inner();
    let when = if once { "next boot only" } else { "every boot" };
    if r.target.is_empty() {
        println!("hardware/{}: boot {device}, {when} (set; this BMC cannot report it back)", r.hardware);
    } else {
        let mode = if r.mode.is_empty() { String::new() } else { format!(", mode {}", r.mode) };
        println!(
            "hardware/{}: boot {device}, {when} (BMC reports target {}, {}{mode})",
            r.hardware, r.target, r.enabled
        );
    }
    Ok(())
}

/// Submits a BMC job; prints its id (and whether this submission made it).
pub async fn submit(c: &mut Client, request: BmcJobRequest) -> anyhow::Result<()> {
    let j = c.submit_bmc_job(request).await.map_err(status)?.into_inner();
    let outcome = if j.created { "created" } else { "unchanged (submitted before with this key)" };
    println!("bmc-job/{} {outcome}: {} on hardware/{}, {}", j.id, j.operation, j.hardware, j.state);
    Ok(())
}

/// Inserts (a URL) or ejects (empty) the virtual CD; prints what the BMC reports after.
pub async fn media(c: &mut Client, hardware: String, image_url: String) -> anyhow::Result<()> {
    let r = c.virtual_media(VirtualMediaRequest { hardware, image_url }).await.map_err(status)?.into_inner();
    if r.inserted {
        println!("hardware/{}: virtual CD holds {}", r.hardware, r.image);
    } else {
        println!("hardware/{}: virtual CD empty", r.hardware);
    }
    Ok(())
}
