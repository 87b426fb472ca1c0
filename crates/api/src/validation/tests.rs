#[test]
fn sizes() {
    use crate::v1::*;
    eprintln!("Task {} Node {} Service {} TaskSpec {} ContainerSpec {} TaskStatus {} Meta {} Annotations {}",
      std::mem::size_of::<Task>(), std::mem::size_of::<Node>(), std::mem::size_of::<Service>(),
      std::mem::size_of::<TaskSpec>(), std::mem::size_of::<ContainerSpec>(), std::mem::size_of::<TaskStatus>(), std::mem::size_of::<Meta>(), std::mem::size_of::<Annotations>());
}
