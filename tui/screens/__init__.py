"""The app's screens and modals: chat, training, checkpoint picker, saved chats, compare, help, dialogs."""
