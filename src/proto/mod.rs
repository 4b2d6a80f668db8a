pub mod http; pub mod ws; pub mod utf8;
