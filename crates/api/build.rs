//! Compiles `proto/shoal/v1/*.proto` with protox (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages and tonic services.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto/shoal/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "proto"));
    files.sort();
    let descriptors = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        // prost messages with small per-call buffers (src/codec.rs).
        .codec_path("crate::codec::ShoalCodec")
        // BTreeMap keeps map fields in key order, so equal objects encode to equal bytes.
        .btree_map(".")
        // TaskSpec is shared between the tasks of a service (src/shared.rs).
        .extern_path(".shoal.v1.TaskSpec", "crate::shared::TaskSpec")
        // Large optional parts live behind a pointer so that small objects stay small in memory.
        .boxed(".shoal.v1.Task.service_annotations")
        .boxed(".shoal.v1.Task.annotations")
        .boxed(".shoal.v1.TaskStatus.runtime_status.container")
        .boxed(".shoal.v1.TaskStatus.runtime_status.process")
        .boxed(".shoal.v1.ContainerSpec.dns_config")
        .boxed(".shoal.v1.ContainerSpec.healthcheck")
        .boxed(".shoal.v1.TaskStatus.port_status")
        .boxed(".shoal.v1.Task.endpoint")
        .boxed(".shoal.v1.Task.log_driver")
        .boxed(".shoal.v1.Service.previous_spec")
        .boxed(".shoal.v1.Node.description")
        .boxed(".shoal.v1.Node.certificate")
        .boxed(".shoal.v1.Node.manager_status")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
