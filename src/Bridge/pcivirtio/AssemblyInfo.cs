// vhost-user, TAP, VFIO, epoll and eventfd are Linux's; so is this program.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
