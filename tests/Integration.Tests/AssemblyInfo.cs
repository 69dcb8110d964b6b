// Every test here boots QEMU guests under TCG (two at a time for the VFIO tests) on a 2-core
// machine: run them one after another, so their boot and message timeouts measure the test and
// not the other tests' guests.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
