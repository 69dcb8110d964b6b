// The program under test is Linux's (vhost-user, TAP, epoll); so are its tests.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]
